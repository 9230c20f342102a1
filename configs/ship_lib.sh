# Shared by configs/*/ship.sh (source it from the repository root): train a model's recipe stages in
# order and ship the last one's weights as a model folder measured on the shared data.
#   train_stages DIR STAGE...   python -m rnnha.train --config configs/DIR/STAGE.yaml --resume for each
#                               (SKIP_TRAIN=1 reuses existing runs); sets COMMAND (for the card) and RUN
#   ship_measured EXPORT_FN     EXPORT_FN (which calls rnnha.export with "$@" appended) writes the folder;
#                               the folder itself is evaluated on the two-camera validation vehicles
#                               and the Stanford Cars holdout; EXPORT_FN again writes those figures in
DATA=${DATA:-../shared/data}

train_stages() {
  local dir=$1 stage
  shift
  COMMAND=""
  for stage in "$@"; do
    COMMAND+="${COMMAND:+ && }python -m rnnha.train --config configs/$dir/$stage.yaml"
    if [ "${SKIP_TRAIN:-0}" != 1 ]; then
      python -m rnnha.train --config "configs/$dir/$stage.yaml" --resume
    fi
  done
  RUN=${RUN:-runs/${*: -1}}
}

ship_measured() {
  "$1"
  mkdir -p "$RUN/eval"
  python -m rnnha.evaluate --model "$OUT" --dataset two-camera --root "$DATA/khoa-vehicle-reid" --json > "$RUN/eval/two-camera.json"
  python -m rnnha.evaluate --model "$OUT" --dataset stanford-cars --root "$DATA/stanford-cars" --json > "$RUN/eval/stanford-cars.json"
  "$1" --metrics "two-camera=$RUN/eval/two-camera.json" --metrics "stanford-cars=$RUN/eval/stanford-cars.json"
  cat "$RUN/eval/two-camera.json" "$RUN/eval/stanford-cars.json"
}
