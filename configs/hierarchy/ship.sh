#!/usr/bin/env bash
# Reproduces the three-level default model (vehicle type -> car model -> identity) from scratch: train
# the recipe's stages in order (224 px, then 320 px from the first's last weights, then twice 320 px with
# colour jitter from the second's, two seeds; the backbone's first three stages frozen throughout;
# resumable), average the last three stages' last weights (rnnha.soup), export fp16 weights with the
# temperatures fitted on the calibration parts of the training data and the same-vehicle threshold and
# probability calibrated on the validation pairs, measure the exported folder itself, and write those
# figures into its config.json and model card.
# SKIP_TRAIN=1 reuses existing runs; OUT=assets/default makes it the shipped model.
set -euo pipefail
cd "$(dirname "$0")/../.."
source configs/ship_lib.sh
OUT=${OUT:-runs/three_level_folder}
train_stages hierarchy three_level three_level_320_frozen three_level_320_jitter three_level_320_jitter2
RUN=runs/three_level_soup
INGREDIENTS="runs/three_level_320_frozen/last.safetensors runs/three_level_320_jitter/last.safetensors runs/three_level_320_jitter2/last.safetensors"
mkdir -p "$RUN"
python -m rnnha.soup "$RUN/soup.safetensors" $INGREDIENTS
COMMAND+=" && python -m rnnha.soup $RUN/soup.safetensors $INGREDIENTS"

ship() {
  python -m rnnha.export "$RUN/soup.safetensors" "$OUT" --dtype float16 --name rnnha-default \
    --license other \
    --description "RNN-HA, EfficientNet-Lite0, 320 px, three levels: vehicle type, car model (196 Stanford Cars classes), vehicle re-id; calibrated probabilities; trained on a CPU" \
    --training-data "The train list of the two-camera Vehicle Re-ID dataset by Khoa Nguyen Truong (Apache-2.0) and the Stanford Cars train split (Krause et al., 3dRR 2013) less 10 % of each class held out, each less a further 5 % set aside to fit the temperatures. Stanford Cars is for non-commercial research use only, and so are these weights." \
    --temperatures --calibrate two-camera "$DATA/khoa-vehicle-reid" --calibrate-list val.txt \
    --command "$COMMAND" "$@"
}
ship_measured ship
