"""RNN-HA demo: identify a vehicle, compare two images, browse attention. UI wiring only: the logic
is rnnha.service (identify / compare / overlays), rnnha.gallery (index and cache), rnnha.uploads (safe
zip and image uploads), zoo (models).

    python app.py                      # http://127.0.0.1:7860 (GRADIO_SERVER_NAME / _PORT honoured)

A public service: every endpoint is reachable over raw HTTP, so every input is checked here as the UI
would limit it (README, "Limits and safety"). Operator settings, all optional:
    RNNHA_CACHE            folder for gallery caches and uploaded galleries (default: under the temp dir)
    RNNHA_ALLOW_MODELS     extra model names or shell patterns a client may ask for, comma-separated
                           (e.g. "hf-hub:my-org/*"); off: only the zoo's list_models()
    RNNHA_MAX_UPLOAD_MB    largest file Gradio accepts (default 100)
    RNNHA_CACHE_MB         gallery cache size, least recently used removed first (default 512)
    RNNHA_UPLOADS_MB       uploaded galleries kept on disk, oldest removed first (default 2048)
    RNNHA_QUEUE_SIZE       requests waiting at most; more are told to try again (default 64)
    RNNHA_CONCURRENCY      requests computed at once (default 2)
    RNNHA_SESSION_TTL      seconds an uploaded gallery is kept after it was built (default 3600)
    RNNHA_BACKEND          onnxruntime, onnxruntime-int8 or openvino: the default model runs that export of
    RNNHA_EXPORT           the folder RNNHA_EXPORT (`python -m rnnha.export --format onnx|openvino [--int8]
                           default FOLDER`, docs/export.md) instead of PyTorch; checked at start-up
    RNNHA_GALLERY          a prebuilt index folder (`python -m rnnha.index build`, docs/index.md), served
                           instead of the shipped gallery to the model it was built with (the other models
                           keep the shipped one); checked at start-up: FAISS installed, a complete index,
                           its model one of the app's with the same weights. Its images are the only files
                           of its folder the app reads or shows.
"""
from __future__ import annotations

import fnmatch
import functools
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder, is_in_or_equal

from rnnha.gallery import Gallery, evict_least_recently_used, items_from_folder
from rnnha.images import ImageError
from rnnha.index import IndexGallery, import_faiss, read_manifest
from rnnha.io import remove_stale_temporaries
from rnnha.overlay import colorbar
from rnnha.service import ReidService, path_text
from rnnha.uploads import MAX_UPLOAD_IMAGES, items_from_uploads
from zoo import list_models, load_model

try:  # a ZeroGPU Space: the GPU work runs inside spaces.GPU, anywhere else as it is
    import spaces

    gpu = spaces.GPU
except ImportError:
    def gpu(fn=None, **_):
        return fn if fn is not None else (lambda f: f)

log = logging.getLogger("rnnha.app")
ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_GALLERY = ASSETS / "gallery"
CACHE = Path(os.environ.get("RNNHA_CACHE", Path(tempfile.gettempdir()) / "rnnha-cache"))
ALLOW_MODELS = [p.strip() for p in os.environ.get("RNNHA_ALLOW_MODELS", "").split(",") if p.strip()]
MAX_UPLOAD_MB = int(os.environ.get("RNNHA_MAX_UPLOAD_MB", 100))
CACHE_MB = int(os.environ.get("RNNHA_CACHE_MB", 512))
UPLOADS_MB = int(os.environ.get("RNNHA_UPLOADS_MB", 2048))
QUEUE_SIZE = int(os.environ.get("RNNHA_QUEUE_SIZE", 64))
CONCURRENCY = int(os.environ.get("RNNHA_CONCURRENCY", 2))
SESSION_TTL = int(os.environ.get("RNNHA_SESSION_TTL", 3600))  # seconds a session's gallery is kept
INDEX = os.environ.get("RNNHA_GALLERY", "").strip() or None  # a prebuilt rnnha.index folder
BACKEND = os.environ.get("RNNHA_BACKEND", "").strip() or None  # an exported backend for the default model
EXPORT = os.environ.get("RNNHA_EXPORT", "").strip() or None  # ... and the folder that holds its export
PAGE = 12
MATCH_COLUMNS = ["rank", "similarity", "vehicle", "camera", "correct", "file"]
NOT_AN_UPLOAD = "This image is not an upload of this app, or it has expired: upload the image again."


@dataclass(frozen=True)
class UserGallery:
    """A session's own gallery: its folder under CACHE/uploads and its items."""
    folder: Path
    items: tuple


# --- inputs, checked as the UI limits them -------------------------------------------------------

def _model(name) -> str:
    """One of the zoo's models (the dropdown's choices), or a name the operator allows."""
    if isinstance(name, str) and len(name) <= 200 and (
            name in list_models() or any(fnmatch.fnmatchcase(name, p) for p in ALLOW_MODELS)):
        return name
    raise gr.Error(f"Unknown model: choose one of {', '.join(list_models())}.")


def _flag(value, what: str = "The raw-attention checkbox") -> bool:
    if not isinstance(value, bool):
        raise gr.Error(f"{what} takes true or false.")
    return value


def _page(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value != int(value):
        raise gr.Error("The page number must be a whole number.")
    return int(max(-1, min(value, 10**6)))


def _upload(payload) -> tuple[str, str]:
    """An image input's raw payload -> (server path, original file name). Only files that came through
    this app's upload (Gradio's upload folder, where examples are cached too) or the shipped gallery are
    accepted; any other path gets the same answer whether or not it exists."""
    if payload is None:
        raise gr.Error("No image: upload one or pick an example.")
    path = payload.get("path") if isinstance(payload, dict) else None
    if not isinstance(path, str) or not path or len(path) > 4096 or "\x00" in path:
        raise gr.Error(NOT_AN_UPLOAD)
    resolved = Path(path).resolve()
    allowed = is_in_or_equal(resolved, Path(get_upload_folder()).resolve()) or \
        is_in_or_equal(resolved, DEFAULT_GALLERY) or _indexed(resolved)
    if not allowed or not resolved.is_file():
        raise gr.Error(NOT_AN_UPLOAD)
    name = payload.get("orig_name")
    return str(resolved), (name if isinstance(name, str) and len(name) <= 255 else resolved.name)


def _indexed(resolved: Path) -> bool:
    """Whether the file is one of the operator's index images (one of its items, not any file beside them)."""
    if INDEX is None:
        return False
    try:
        return index_gallery()[1].items.position_of(resolved) is not None
    except Exception:  # noqa: BLE001 - an index that does not open holds no file a client may name
        return False


def _shown(path: Path) -> str:
    """A gallery image as an output file: an index image is first copied into Gradio's cache (its own
    folder is not one Gradio serves from, and must not become one: only the indexed files are shown)."""
    if INDEX is None or is_in_or_equal(path, DEFAULT_GALLERY) or is_in_or_equal(path, CACHE / "uploads"):
        return str(path)
    from gradio.processing_utils import save_file_to_cache

    return save_file_to_cache(path, get_upload_folder())


def _errors(fn):
    """Every failure becomes a clear message in the UI and the API, with no server path and no trace;
    anything unexpected is logged in full here. The app keeps serving."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except ImageError as exc:  # our messages name files, never folders
            raise gr.Error(str(exc)) from None
        except Exception:  # noqa: BLE001 - a public endpoint answers, whatever broke
            log.exception("%s failed", fn.__name__)
            raise gr.Error("The server could not finish this request; try again, or with another image.") from None
    return wrapper


# --- models and galleries, built once and cached -------------------------------------------------

@lru_cache(maxsize=4)
def _predictor(model: str):
    try:
        if BACKEND and model == "default":
            return load_model(EXPORT, backend=BACKEND)
        return load_model(model)
    except Exception:  # noqa: BLE001 - the detail (paths, endpoints) is for the log, not the client
        log.exception("loading model %r failed", model)
        raise gr.Error(f"The model {model!r} could not be loaded; try another one.") from None


@lru_cache(maxsize=1)
def _default_items():
    return tuple(items_from_folder(DEFAULT_GALLERY))


@lru_cache(maxsize=8)
def _gallery(model: str, items: tuple) -> Gallery:
    return Gallery.build(_predictor(model), items, CACHE / "galleries", cache_bytes=CACHE_MB * 2**20)


@lru_cache(maxsize=1)
def index_gallery() -> tuple[str, IndexGallery]:
    """(model name, gallery) of the operator's RNNHA_GALLERY index, opened once; ValueError or
    ImportError saying what is wrong (check_index turns it into a start-up message)."""
    import_faiss()  # first: without FAISS nothing else matters
    manifest = read_manifest(INDEX)
    model = manifest.get("model_name")
    try:
        model = _model(model)
    except gr.Error:
        raise ValueError(f"it was built with the model {model!r}, which this app does not offer (add it to "
                         "RNNHA_ALLOW_MODELS, or build the index with one of the zoo's models)") from None
    try:
        predictor = _predictor(model)
    except gr.Error:
        raise ValueError(f"its model {model!r} could not be loaded (the log above says why)") from None
    return model, IndexGallery.open(INDEX, predictor)


def check_backend() -> None:
    """At start-up: RNNHA_BACKEND's export loads, or the app stops with one line saying why."""
    if not BACKEND:
        return
    try:
        if not EXPORT:
            raise ValueError("set RNNHA_EXPORT to the folder of `python -m rnnha.export --format ... default FOLDER`")
        predictor = load_model(EXPORT, backend=BACKEND)
    except (ValueError, ImportError, OSError) as exc:
        raise SystemExit(f"error: RNNHA_BACKEND={BACKEND}: {exc}") from None
    log.info("the default model runs %r", predictor)


def check_index() -> str | None:
    """At start-up: the RNNHA_GALLERY index opens, or the app stops with one line saying why (never a
    trace on each request). Returns the index's model name (the dropdown's default), None without one."""
    if INDEX is None:
        return None
    try:
        model, gallery = index_gallery()
    except (ValueError, ImportError, OSError) as exc:
        raise SystemExit(f"error: RNNHA_GALLERY={INDEX}: {exc}") from None
    gallery.items.position_of(gallery.items.root)  # makes the path lookup now, not on the first request
    log.info("RNNHA_GALLERY: %s for the model %r", gallery, model)
    return model


def _index_for(predictor) -> IndexGallery | None:
    """The operator's index when this model (same weights) built it, else None."""
    if INDEX is None:
        return None
    try:
        gallery = index_gallery()[1]
    except Exception:  # noqa: BLE001 - checked at start-up; the detail is for the log
        log.exception("RNNHA_GALLERY %s could not be opened", INDEX)
        raise gr.Error("The gallery index could not be opened; try again later.") from None
    return gallery if gallery.fingerprint == predictor.fingerprint else None


def service(model: str, mine: UserGallery | None = None, search: bool = True) -> ReidService:
    """The model with a gallery (the session's own, else the operator's index for the model it was
    built with, else the shipped one), all cached; search=False: no gallery (compare searches nothing,
    so a cold start does not embed the gallery for it)."""
    if mine is not None and not mine.folder.is_dir():
        raise gr.Error("Your gallery has expired: upload it again, or use the shipped gallery.")
    predictor = _predictor(model)
    gallery = None
    if search:
        gallery = (None if mine else _index_for(predictor)) or _gallery(model, mine.items if mine else _default_items())
    return ReidService(predictor, gallery)


def _uploads_dir() -> Path:
    (CACHE / "uploads").mkdir(parents=True, exist_ok=True)
    return CACHE / "uploads"


def _forget(mine: UserGallery | None) -> None:
    """gr.State's delete_callback: a session's uploads go when the session ends or expires."""
    if isinstance(mine, UserGallery) and is_in_or_equal(mine.folder, _uploads_dir()):
        shutil.rmtree(mine.folder, ignore_errors=True)


def _bound_uploads(keep: Path) -> None:
    """Oldest session folders go first once uploads take more than UPLOADS_MB (sessions that Gradio
    evicts without a callback are caught here)."""
    folders = sorted((p for p in _uploads_dir().iterdir() if p.is_dir() and p != keep), key=lambda p: p.stat().st_mtime)
    total = sum(f.stat().st_size for f in _uploads_dir().rglob("*") if f.is_file())
    for folder in folders:
        if total <= UPLOADS_MB * 2**20:
            break
        total -= sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        shutil.rmtree(folder, ignore_errors=True)


def clean_start() -> None:
    """At start-up: no earlier process's uploads or half-written cache files survive."""
    shutil.rmtree(CACHE / "uploads", ignore_errors=True)
    if (CACHE / "galleries").is_dir():
        remove_stale_temporaries(CACHE / "galleries")
        evict_least_recently_used(CACHE / "galleries", CACHE_MB * 2**20)


# --- endpoints -----------------------------------------------------------------------------------

@_errors
@gpu
def identify(image, model: str, mine: UserGallery | None, raw: bool = False):
    """Identify one vehicle image: its car model or type (top-5 with probabilities), its top-5 gallery
    matches, where the model looked (attention overlay) and the coarse-to-fine path with probabilities
    (e.g. "car 99 % → Audi TTS Coupe 2012 81 %"), which says "not sure" below a calibrated confidence.

    Args:
        image: a photo of one vehicle (a JPEG, PNG or WebP file or URL), ideally cropped to the vehicle.
        model: the model's name in the zoo; "default" is the embedded model.
        raw: true to show the raw attention map instead of the image with the map overlaid.
    """
    path, name = _upload(image)
    svc = service(_model(model), mine)
    return identify_outputs(svc, svc.identify(path, name, raw=_flag(raw)))


def identify_outputs(svc: ReidService, result) -> tuple:
    """An Identification -> the Identify tab's components: label, match rows, match images, overlay, note,
    the path (the deepest level it is sure of first)."""
    rows = [[m.rank, round(m.similarity, 4), m.item.vehicle or "", m.item.camera or "",
             "" if m.correct is None else ("yes" if m.correct else "no"), m.item.path.name] for m in result.matches]
    captions = [(_shown(m.item.path), f"#{m.rank} {m.similarity:.3f} {m.item.vehicle or m.item.path.stem}"
                 + {None: "", True: " ✓", False: " ✗"}[m.correct]) for m in result.matches]
    note = f"Query identity: **{result.query_vehicle}** (from its file name)." if result.query_vehicle else \
        "Query identity unknown: matches are not marked."
    return result.coarse, rows, captions, result.overlay, note, _path_note(svc, result)


def _path_note(svc: ReidService, result) -> str:
    answer = result.answer
    headline = f"**{answer.label}**" if answer else "**Not sure**"
    calibrated = "" if svc.calibrated else " (probabilities not calibrated for this model)"
    return f"{headline} · {path_text(result.path)}{calibrated}"


@_errors
@gpu
def compare(first, second, model: str, raw: bool = False):
    """Compare two vehicle images: cosine similarity, a same / different verdict against the model's
    calibrated threshold with the probability of the same vehicle, both attention overlays, and a picture
    of where this similarity falls among the calibration pairs'.

    Args:
        first: a photo of one vehicle (a JPEG, PNG or WebP file or URL).
        second: a photo of the vehicle to compare it with.
        model: the model's name in the zoo; "default" is the embedded model.
        raw: true to show the raw attention maps instead of the images with the maps overlaid.
    """
    a, b = _upload(first)[0], _upload(second)[0]
    svc = service(_model(model), search=False)
    return compare_outputs(svc, svc.compare(a, b, raw=_flag(raw)))


def compare_outputs(svc: ReidService, result) -> tuple:
    """A Comparison -> the Compare tab's components: similarity, verdict, both overlays, threshold note,
    the distributions picture (None when the model has no calibration pairs)."""
    if result.same is None:
        verdict = "no calibrated threshold for this model"
    else:
        verdict = "same vehicle" if result.same else "different vehicles"
        if result.probability is not None:
            verdict += f" (probability of the same vehicle {100 * result.probability:.0f} %)"
    try:
        picture = svc.similarity_picture(result.similarity)
    except Exception:  # noqa: BLE001 - a picture that cannot be drawn leaves the comparison standing
        log.exception("drawing the similarity picture failed")
        picture = None
    return result.similarity, verdict, result.overlays[0], result.overlays[1], _threshold_note(svc), picture


def _threshold_note(svc: ReidService) -> str:
    if svc.threshold is None:
        return "This model has no calibrated same-vehicle threshold."
    return (f"Threshold **{svc.threshold:.3f}** (cosine), calibrated on {svc.threshold_source or 'validation pairs'}.")


@_errors
@gpu
def browse(model: str, mine: UserGallery | None, page, raw: bool = False, step: int = 0):
    svc = service(_model(model), mine)
    pages = max(1, -(-len(svc.gallery) // PAGE))
    page = min(max(0, _page(page) + step), pages - 1)
    indices = range(page * PAGE, min(len(svc.gallery), (page + 1) * PAGE))
    overlays = svc.gallery_overlays(indices, _flag(raw))
    tiles = [(overlay, f"{svc.gallery.items[i].path.name}") for i, overlay in zip(indices, overlays)]
    return tiles, page, f"Page {page + 1} of {pages} ({len(svc.gallery)} images). Click one to identify it."


def browse_previous(model: str, mine: UserGallery | None, page, raw: bool = False):
    """The previous page of the gallery, each image with the model's attention.

    Args:
        model: the model's name in the zoo; "default" is the embedded model.
        page: the page shown now (0 is the first).
        raw: true for the raw attention maps instead of the images with the maps overlaid.
    """
    return browse(model, mine, page, raw, step=-1)


def browse_next(model: str, mine: UserGallery | None, page, raw: bool = False):
    """The next page of the gallery, each image with the model's attention.

    Args:
        model: the model's name in the zoo; "default" is the embedded model.
        page: the page shown now (0 is the first).
        raw: true for the raw attention maps instead of the images with the maps overlaid.
    """
    return browse(model, mine, page, raw, step=1)


@_errors
def pick_from_browser(model: str, mine: UserGallery | None, page, evt: gr.SelectData):
    svc = service(_model(model), mine)
    index = _page(page) * PAGE + (evt.index if isinstance(evt.index, int) else -1)
    if not 0 <= index < len(svc.gallery):
        raise gr.Error("No such gallery image: pick one on the current page.")
    return _shown(svc.gallery.items[index].path), gr.Tabs(selected="identify")


@_errors
@gpu(duration=300)
def build_gallery(files, model: str, mine: UserGallery | None, progress=gr.Progress()):
    """Build a gallery from uploaded images and/or zip files; it replaces the session's previous one.

    Args:
        files: vehicle images (JPEG, PNG, WebP) and/or zip files of them.
        model: the model's name in the zoo; "default" is the embedded model.
    """
    model = _model(model)
    if not files:
        raise gr.Error("Upload images or a zip file first.")
    if not isinstance(files, list) or len(files) > MAX_UPLOAD_IMAGES:
        raise gr.Error(f"Upload at most {MAX_UPLOAD_IMAGES} files (or zip them).")
    paths = [f if isinstance(f, str) else f.name for f in files]
    folder = Path(tempfile.mkdtemp(prefix="gallery-", dir=_uploads_dir()))
    try:
        items, skipped = items_from_uploads(paths, folder)  # removes folder itself if it refuses
        Gallery.build(_predictor(model), items, CACHE / "galleries", lambda f, text: progress(f, desc=text),
                      cache_bytes=CACHE_MB * 2**20)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    _forget(mine)
    _bound_uploads(keep=folder)
    note = f"Gallery of {len(items)} images ready." + (f" Skipped: {'; '.join(skipped[:20])}" if skipped else "")
    return UserGallery(folder, tuple(items)), note


def reset_gallery(mine: UserGallery | None):
    """Forget this session's own gallery: searches use the shipped gallery again."""
    _forget(mine)
    return None, "Using the shipped gallery."


# --- the page ------------------------------------------------------------------------------------

def build_demo(default_model: str = "default") -> gr.Blocks:
    models = list_models()
    examples = [str(p) for p in sorted(DEFAULT_GALLERY.glob("*_cam1.jpg"))[:6]]
    with gr.Blocks(title="RNN-HA vehicle re-identification", delete_cache=(600, SESSION_TTL)) as demo:
        gr.Markdown("# RNN-HA: coarse-to-fine vehicle re-identification\n"
                    "Which car model is it, which gallery vehicle is it, and where does the model look? "
                    "([paper](https://arxiv.org/abs/1812.04239))")
        mine = gr.State(None, time_to_live=SESSION_TTL, delete_callback=_forget)  # None: the shipped gallery
        with gr.Row():
            model = gr.Dropdown(models, value=default_model if default_model in models else None,
                                label="Model (from the zoo)", scale=2, allow_custom_value=bool(ALLOW_MODELS))
            with gr.Column(scale=1):
                gr.Image(colorbar(), label="Attention colormap", interactive=False, height=60)
                raw = gr.Checkbox(False, label="Show the raw attention map (no blending)")
        with gr.Tabs() as tabs:
            with gr.Tab("Identify", id="identify"):
                with gr.Row():
                    with gr.Column():
                        query = gr.Image(type="filepath", label="Vehicle image", sources=["upload", "clipboard"])
                        run = gr.Button("Identify", variant="primary")
                        gr.Examples(examples, inputs=query, label="Examples (validation vehicles)")
                    with gr.Column():
                        path = gr.Markdown(label="Coarse to fine")
                        coarse = gr.Label(num_top_classes=5, label="Car model / type")
                        overlay = gr.Image(label="Attention overlay", interactive=False)
                note = gr.Markdown()
                matches = gr.Dataframe(headers=MATCH_COLUMNS, label="Top-5 gallery matches", interactive=False)
                match_images = gr.Gallery(label="Matches", columns=5, height=220)
                # preprocess=False: the image is decoded once, by rnnha.images, within its limits
                run.click(identify, [query, model, mine, raw], [coarse, matches, match_images, overlay, note, path],
                          api_name="identify", preprocess=False)
            with gr.Tab("Compare", id="compare"):
                with gr.Row():
                    first = gr.Image(type="filepath", label="Image A", sources=["upload", "clipboard"])
                    second = gr.Image(type="filepath", label="Image B", sources=["upload", "clipboard"])
                go = gr.Button("Compare", variant="primary")
                pairs = sorted(DEFAULT_GALLERY.glob("*_cam1.jpg"))[:2]
                gr.Examples([[str(p), str(p).replace("_cam1", "_cam2")] for p in pairs]
                            + [[str(pairs[0]), str(pairs[1]).replace("_cam1", "_cam2")]],
                            inputs=[first, second], label="Examples")
                with gr.Row():
                    similarity = gr.Number(label="Cosine similarity", precision=4)
                    verdict = gr.Textbox(label="Verdict")
                threshold = gr.Markdown()
                picture = gr.Image(label="This pair among the calibration pairs", interactive=False, height=230,
                                   show_label=True)
                with gr.Row():
                    overlay_a = gr.Image(label="Attention A", interactive=False)
                    overlay_b = gr.Image(label="Attention B", interactive=False)
                go.click(compare, [first, second, model, raw],
                         [similarity, verdict, overlay_a, overlay_b, threshold, picture],
                         api_name="compare", preprocess=False)
            with gr.Tab("Attention browser", id="browse"):
                page = gr.Number(0, visible=False, precision=0)
                with gr.Row():
                    previous = gr.Button("◀ Previous")
                    status = gr.Markdown()
                    following = gr.Button("Next ▶")
                tiles = gr.Gallery(label="Gallery with attention", columns=6, height=520, allow_preview=False)
                previous.click(browse_previous, [model, mine, page, raw], [tiles, page, status],
                               api_name="browse_previous", preprocess=False)
                following.click(browse_next, [model, mine, page, raw], [tiles, page, status],
                                api_name="browse_next", preprocess=False)
                tiles.select(pick_from_browser, [model, mine, page], [query, tabs], api_visibility="private",
                             preprocess=False)
            with gr.Tab("Your gallery", id="gallery"):
                gr.Markdown("Upload several images or a zip of them. File names such as `car_0139_cam1.jpg` "
                            "tell the identity and camera, so matches can be marked. Embeddings are cached "
                            "per model.")
                uploads = gr.File(file_count="multiple", label="Images or .zip")
                with gr.Row():
                    build = gr.Button("Build index", variant="primary")
                    reset = gr.Button("Use the shipped gallery")
                built = gr.Markdown()
                build.click(build_gallery, [uploads, model, mine], [mine, built], api_name="build_gallery")
                reset.click(reset_gallery, [mine], [mine, built], api_name="reset_gallery")
        gr.Markdown("Gallery: validation vehicles of the two-camera Vehicle Re-ID dataset by Khoa Nguyen Truong "
                    "(Apache-2.0, see `assets/gallery/ATTRIBUTION.md`).")
        demo.load(functools.partial(browse, mine=None, page=0, raw=False), [model], [tiles, page, status],
                  api_visibility="private", preprocess=False)
    return demo


def launch(demo: gr.Blocks | None = None, **kwargs):
    """Serve with the public-service limits: a bounded queue (overload is told to try again), a bounded
    number of requests computed at once, and Gradio's own upload size limit."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    check_backend()
    indexed_model = check_index()
    clean_start()
    demo = demo or build_demo(indexed_model or "default")
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY)
    kwargs.setdefault("max_file_size", f"{MAX_UPLOAD_MB}mb")
    if not any(is_in_or_equal(CACHE.resolve(), Path(base).resolve()) for base in (tempfile.gettempdir(), os.getcwd())):
        # Gradio shows result files from the temp folder and the working directory only; a user's gallery
        # matches come from RNNHA_CACHE/uploads when the operator put the cache elsewhere (e.g. /data)
        kwargs.setdefault("allowed_paths", [str(CACHE / "uploads")])
    return demo.launch(**kwargs)


if __name__ == "__main__":
    launch()
