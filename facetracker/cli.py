"""`facetracker COMMAND` (or `python -m facetracker COMMAND`): every job of the app, headless.

    inspect   DIR                         what a dataset folder holds, and what is skipped and why
    dataset export DIR --format F --out O a dataset as COCO, YOLO or Pascal VOC
    train     --data DIR --run-dir DIR    train (or --resume) a face tracker
    evaluate  --model M --data DIR        metrics on a dataset (or one split of it)
    predict   --model M --images DIR      labelme pre-labels for a folder of images
    label     DIR [--video FILE]          pre-label the unlabelled photos of a dataset (or a video's frames)
    export    --model M --format F        keras, savedmodel, tflite, tflite-int8, onnx
    bench                                 speed of the live frame path, training and augmentation
    blur      VIDEO -o OUT                every face in a video blurred, pixelated or boxed out (sound kept)
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import sys
from pathlib import Path

from facetracker.config.catalog import BACKBONE_NAMES, EXPORT_FORMATS, HEADS, WEIGHTS
from facetracker.config.jsonconfig import ConfigError
from facetracker.config.training import (
    PRESETS,
    SETTINGS,
    STRATEGIES,
    TrainConfig,
    config_for,
    default_augment,
)
from facetracker.data.augment import AugmentConfig
from facetracker.data.datasets import DatasetError, load_dataset
from facetracker.data.formats import FORMATS
from facetracker.evaluation.coco_eval import format_coco
from facetracker.io.progress import progress_bar
from facetracker.runs import run_folder as runs
from facetracker.runs.ownership import RunLocked
from facetracker.runs.run_folder import write_json


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def setting(name: str):
    """An argparse type for a training setting: its allowed values are `config.training.SETTINGS[name]`."""
    allowed = SETTINGS[name]

    def parse(text: str) -> int | float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value not in allowed:
            raise argparse.ArgumentTypeError(f"{text} must be {allowed.describe()}")
        return int(value) if allowed.whole else value

    parse.__name__ = name  # argparse names the type in its messages
    return parse


def probability(text: str) -> float:
    """An argparse type: a finite number from 0 to 1 (NaN would make every comparison false)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise argparse.ArgumentTypeError(f"{text} must be a number from 0 to 1")
    return value


def frame_size(text: str) -> tuple[int, int]:
    """An argparse type: a camera frame's WIDTHxHEIGHT in pixels, as 640x480."""
    width, _, height = text.lower().partition("x")
    if not (width.strip().isdigit() and height.strip().isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a frame size such as 640x480")
    size = int(width), int(height)
    if not all(16 <= side <= 10_000 for side in size):
        raise argparse.ArgumentTypeError(f"{text}: each side must be from 16 to 10000 pixels")
    return size


# The train flags that set TrainConfig fields of the same name (as argparse destinations).
TRAIN_FLAGS = ("preset", "backbone", "weights", "allow_random_weights", "head", "epochs", "batch_size", "lr",
               "copies", "augment", "seed", "strategy")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a face tracker into a run folder",
                       description="Train from --data and options; or, without --data, from the config.json "
                                   "already in --run-dir; or carry on a run with --resume.")
    p.add_argument("--data", help="dataset folder (labelme images/ + labels/, or train/ val/ test/)")
    p.add_argument("--run-dir", required=True, help="folder for config, metrics, status, checkpoints, model")
    p.add_argument("--preset", choices=sorted(PRESETS), help="a complete recorded setup; options below override it")
    p.add_argument("--backbone", choices=BACKBONE_NAMES)
    p.add_argument("--weights", choices=WEIGHTS, help="start from ImageNet weights or random")
    p.add_argument("--allow-random-weights", action="store_true", default=None,
                   help="if ImageNet weights cannot be had (offline), go on from random initialisation")
    p.add_argument("--head", choices=HEADS, help="box head: design (global max-pool, as drawn), spatial "
                   "(stride-16 map, flatten, dense), grid (stride-16 map, each cell votes a box) or dense "
                   "(every face: each stride-8 cell scores a face centred there and draws its box)")
    p.add_argument("--epochs", type=setting("epochs"), help="epochs in total (with --resume: the new total)")
    p.add_argument("--batch-size", type=setting("batch_size"))
    p.add_argument("--lr", type=setting("lr"), help="learning rate")
    p.add_argument("--copies", type=setting("copies"), help="augmented passes over the training images per epoch")
    p.add_argument("--augment", help="augmentation config JSON (default: augment.json in the dataset folder)")
    p.add_argument("--seed", type=int)
    p.add_argument("--strategy", choices=STRATEGIES, help="tf.distribute strategy (mirrored: all local GPUs; "
                   "multiworker: several machines, from TF_CONFIG)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="carry on from the run folder's last checkpoint (or start over when no epoch finished)")
    again.add_argument("--overwrite", action="store_true",
                       help="start over in a run folder that already holds a run, replacing its results")


def train_config(args: argparse.Namespace):
    """The run's TrainConfig from the train command's flags, or from the run folder's config.json."""

    run_dir = Path(args.run_dir)
    given = [name for name in ("data", *TRAIN_FLAGS) if getattr(args, name) is not None and name != "epochs"]
    if args.resume or not args.data:
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise ValueError(f"{flags}: a resume trains from {run_dir / runs.CONFIG}; only --epochs may change it "
                             "(--overwrite with --data sets up a new run)")
        if not (run_dir / runs.CONFIG).is_file():
            what = "nothing to resume" if args.resume else "--data is required"
            raise FileNotFoundError(f"{run_dir}: {what} (no {runs.CONFIG})")
        config = TrainConfig.load(run_dir / runs.CONFIG)
        if args.epochs is not None:
            config = config.replace(epochs=args.epochs)
            config.validate(f"{run_dir / runs.CONFIG} with --epochs {args.epochs}")
        return config
    augment = AugmentConfig.load(args.augment) if args.augment else default_augment(args.data)
    return config_for(args.data, args.preset, **{name: getattr(args, name) for name in TRAIN_FLAGS
                                                  if name not in ("preset", "augment")}, augment=augment)


def _run_train(args) -> int:
    config = train_config(args)
    from facetracker.nn.train import train

    if args.resume:
        print(f"resuming {args.run_dir}")
    status = train(config, args.run_dir, resume=args.resume, overwrite=args.overwrite)
    return 0 if status.get("state") in ("finished", "stopped") else 1


def _run_inspect(args) -> int:
    with progress_bar("reading the photos") as progress:
        dataset = load_dataset(args.data, progress=progress)
    for item in dataset.skipped:
        print(item)
    for note in dataset.notes:
        print(f"note: {note}")
    print(dataset.describe())
    if args.json:
        print(json.dumps(dataset.summary(), indent=2))
    return 0


def _run_evaluate(args) -> int:
    from facetracker.evaluation.evaluate import evaluate, evaluate_faces, format_metrics
    from facetracker.evaluation.verdict import MIN_VALIDATION_PHOTOS
    from facetracker.inference.detect import REFERENCE_LABELS

    figures: dict = {}
    if args.model not in REFERENCE_LABELS:  # the face/no-face and single-box figures need a trained model
        with progress_bar("one box a photo") as progress:
            result = evaluate(args.model, args.data, split=args.split, threshold=args.threshold, progress=progress)
        for item in result.skipped:
            print(item)
        print(format_metrics(result.metrics))
        print(f"{len(result.samples)} images evaluated, {len(result.skipped)} skipped")
        figures = {**result.metrics, "skipped": len(result.skipped)}
    with progress_bar("every face") as progress:
        faces, skipped = evaluate_faces(args.model, args.data, split=args.split, threshold=args.threshold,
                                        look_closer=not args.whole_frame, progress=progress)
    if args.model in REFERENCE_LABELS:  # a trained model's skipped files are printed above
        for item in skipped:
            print(item)
        how = "at the photo's own resolution"
    else:
        how = "whole frame, as live video" if args.whole_frame else "looking closer, as for photos"
    print(f"every face ({how}): " + format_metrics(own_figures(faces)))
    print(format_coco(faces))
    if args.far:  # camera frames of a room: scored as the live video runs
        with progress_bar("far away") as progress:
            far, _ = evaluate_faces(args.model, args.data, split=args.split, threshold=args.threshold, far=True,
                                    look_closer=False, progress=progress)
        print("far away (whole frame, as live video): " + format_metrics(own_figures(far)))
        print(format_coco(far))
        faces = {**faces, "far_away": far}
    if faces.get("n_photos", 0) < MIN_VALIDATION_PHOTOS:
        print(f"warning: only {faces.get('n_photos', 0)} photos: too few to judge the model, one photo more or less "
              f"moves every figure by a tenth or more (at least {MIN_VALIDATION_PHOTOS})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, {**figures, "faces": faces, "model": str(args.model), "data": str(args.data),
                               "split": args.split})
        print(f"wrote {args.json}")
    return 0


def own_figures(faces: dict) -> dict:
    """The per-face figures computed here, without COCO's (printed on a line of their own)."""
    return {key: value for key, value in faces.items() if not key.startswith("coco_")}


def _run_predict(args) -> int:
    from facetracker.labelling.predict import prelabel_folder

    with progress_bar("pre-labelling") as progress:
        summary = prelabel_folder(args.model, args.images, args.out, threshold=args.threshold,
                                  overwrite=args.overwrite, log=print, progress=progress)
    print(f"{summary['written']} label files written to {args.out} ({summary['faces']} faces), "
          f"{summary['kept']} existing kept, {summary['skipped']} skipped")
    return 0


def _run_label(args) -> int:
    from facetracker.labelling.prelabel import label_dataset

    with progress_bar("pre-labelling") as progress:
        done = label_dataset(args.folder, args.model, video=args.video, every_s=args.every, threshold=args.threshold,
                             progress=progress)
    print(f"{args.folder}: {done['frames']} video frames added, {done['photos']} unlabelled photos looked at, "
          f"{done['labelled']} labelled with {done['faces']} faces (the rest hold no face)")
    return 0


def _run_export(args) -> int:
    from facetracker.nn.export import export

    out = export(args.model, args.format, args.out, frame=args.frame)
    print(f"wrote {out}")
    return 0


def _run_dataset_export(args) -> int:
    from facetracker.data.formats import export_dataset

    with progress_bar(f"exporting to {args.format}") as progress:
        result = export_dataset(args.data, args.format, args.out, progress=progress)
    for item in result.skipped:
        print(item)
    print(result.describe())
    return 0


def _add_dataset(sub) -> None:
    p = sub.add_parser("dataset", help="dataset jobs: export to the field's formats")
    jobs = p.add_subparsers(dest="dataset_command", required=True)
    e = jobs.add_parser("export", help="write a dataset as COCO, YOLO or Pascal VOC",
                        description="Every photo and face of a dataset folder (any layout inspect reads) written "
                                    "in another format, its split folders kept; photos without a face are kept "
                                    "too (a COCO image without annotations, an empty YOLO .txt, a VOC file "
                                    "without an object).")
    e.add_argument("data", help="dataset folder")
    e.add_argument("--format", required=True, choices=FORMATS,
                   help="coco: annotations/instances_<split>.json and <split>/; yolo: <split>/images and "
                        "<split>/labels with data.yaml (Ultralytics); voc: <split>/images and <split>/annotations")
    e.add_argument("--out", required=True, help="a new (or empty) folder for the export")
    e.set_defaults(run=_run_dataset_export)


def _run_bench(args) -> int:
    from facetracker.data.bench_photos import face_samples, helen_folder

    face_samples(helen_folder(args.data))  # a missing or empty folder is said before TensorFlow loads
    from facetracker.nn.bench import main as bench_main

    with progress_bar("bench", unit="stage") as progress:
        args.progress = progress
        return bench_main(args)


def _run_blur(args) -> int:
    from facetracker.evaluation.leak import measure_leak, read_mot_labels
    from facetracker.inference.blur import (
        CoverSettings,
        blur_video,
        finds_one_face,
        open_blur_detector,
    )

    labels = read_mot_labels(args.check) if args.check else None
    chosen = {"margin": args.margin} if args.margin is not None else {}
    settings = CoverSettings(mode=args.mode, whole_frame_when_unsure=args.whole_frame_when_unsure, **chosen)
    detector = open_blur_detector(args.model, args.threshold)
    if finds_one_face(args.model):
        print(f"note: {args.model} finds one face a frame; any other face stays visible (use yunet or a model "
              "that finds every face)")
    with progress_bar("blurring", unit="frame") as progress:
        result = blur_video(args.video, args.out, detector, settings, progress=progress,
                            keep_covers=labels is not None, compare_per_frame=labels is not None)
    width, height = result.size
    sound = f"{result.sound_streams} sound stream{'s' if result.sound_streams != 1 else ''} kept"
    print(f"wrote {args.out}: {result.frames} frames, {width}x{height} at {float(result.rate):g} frames/s, {sound}, "
          f"{result.faces_seen} faces followed, unsure in {result.unsure_frames} frames")
    print(f"took {result.seconds:.1f} s: {result.frames_per_second:.1f} frames/s, "
          f"{result.times_real_time:.2f}x real time")
    if labels is not None:
        tracked = measure_leak(result.covers, labels, result.size, args.check)
        per_frame = measure_leak(result.per_frame_covers, labels, result.size, args.check)
        print(f"leak: labelled faces less than 90% covered, against {args.check}")
        print(f"  tracked, as written:             {tracked.describe()}")
        print(f"  frame by frame (tracker off):    {per_frame.describe()}")
    return 0


THRESHOLD_HELP = ("a face when its probability is at least this (default: 0.5; 0.3 for a model that finds every "
                  "face, whose focal loss keeps its scores lower)")
MODEL_HELP = (".keras, .tflite, .onnx or a run folder (SavedModel folders are refused: a TensorFlow graph can "
              "read and write files, and model files are data, never code)")


def build_parser() -> argparse.ArgumentParser:

    parser = argparse.ArgumentParser(prog="facetracker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="what a dataset folder holds and what is skipped")
    p.add_argument("data")
    p.add_argument("--json", action="store_true", help="also print the counts as JSON")
    p.set_defaults(run=_run_inspect)

    _add_dataset(sub)

    _add_train(sub)
    sub.choices["train"].set_defaults(run=_run_train)

    p = sub.add_parser("evaluate", help="metrics of a model on a dataset, per photo and per face")
    p.add_argument("--model", required=True, help=MODEL_HELP + "; or yunet or haar, the reference detectors "
                   "(per-face figures only)")
    p.add_argument("--data", required=True)
    p.add_argument("--split", choices=("train", "val", "test"), help="only this split (default: all images)")
    p.add_argument("--threshold", type=probability, default=None, help=THRESHOLD_HELP)
    p.add_argument("--far", action="store_true",
                   help="also score each photo shrunk onto a 640x480 canvas, its largest face 5-20%% of the width "
                        "(faces across a room, made from close-ups), scored as live video runs")
    p.add_argument("--whole-frame", action="store_true",
                   help="score every face as live video runs the model, the whole photo in one pass (default: "
                        "as photos are run, also searched in tiles at twice the scale, which finds smaller faces)")
    p.add_argument("--json", help="also write the metrics to this JSON file")
    p.set_defaults(run=_run_evaluate)

    p = sub.add_parser("predict", help="labelme pre-labels for a folder of images")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--images", required=True)
    p.add_argument("--out", required=True, help="folder for the labelme JSON files (e.g. the dataset's labels/)")
    p.add_argument("--threshold", type=probability, default=None, help=THRESHOLD_HELP)
    p.add_argument("--overwrite", action="store_true", help="replace label files that already exist")
    p.set_defaults(run=_run_predict)

    p = sub.add_parser("label", help="pre-label a dataset folder's unlabelled photos (or a video's frames)")
    p.add_argument("folder", help="dataset folder: images/ and labels/ (made if missing)")
    p.add_argument("--model", default="yunet", help="yunet (default), haar, or a trained model: " + MODEL_HELP)
    p.add_argument("--video", help="a video file: a frame every --every seconds is added to images/ first")
    p.add_argument("--every", type=float, default=0.5, help="seconds between the video frames kept (default 0.5)")
    p.add_argument("--threshold", type=probability, default=0.6, help="a face when its score is at least this")
    p.set_defaults(run=_run_label)

    p = sub.add_parser("export", help="export a model for another runtime")
    p.add_argument("--model", required=True, help=".keras file or run folder (a SavedModel is refused as input)")
    p.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    p.add_argument("--out", help="output path (default: beside the model)")
    p.add_argument("--frame", type=frame_size, metavar="WxH",
                   help="a model that finds every face, shaped for camera frames of this size, as the Detect page "
                        "runs its video: 640x480 on a 384x288 input for a 320 px model, where its square input "
                        "would fit the frame into 320x240 (not for keras)")
    p.set_defaults(run=_run_export)

    p = sub.add_parser("bench", help="speed of the live frame path, training and augmentation")
    p.add_argument("--data", help="folder holding faces-helen/, the face photos for the frames "
                   "(default: $FACETRACKER_DATA)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--frames", type=positive_int, default=200, help="frames timed per detector")
    p.add_argument("--quick", action="store_true", help="fewer repetitions (for a smoke test)")
    p.set_defaults(run=_run_bench)

    p = sub.add_parser("blur", help="blur, pixelate or box out every face in a video (the sound is kept)",
                       description="Every face found is tracked and stays hidden through the frames where the "
                                   "detector misses it, and from a little before it is first found. The output "
                                   "is H.264 in MP4, MOV or MKV, the same size and frame rate, each sound stream "
                                   "kept; it appears only once complete.")
    p.add_argument("video", help="the video file")
    p.add_argument("-o", "--out", required=True, help="the blurred video to write (.mp4, .m4v, .mov or .mkv)")
    p.add_argument("--model", default="yunet", help="yunet (default), haar, or a trained model that finds every face: "
                   + MODEL_HELP)
    p.add_argument("--mode", choices=("blur", "pixelate", "box"), default="blur",
                   help="a strong Gaussian blur (default), large pixels, or a black box")
    p.add_argument("--margin", type=probability, default=None,
                   help="grow each face's box by this share of its width and height on each side (default 0.2)")
    p.add_argument("--whole-frame-when-unsure", action="store_true",
                   help="hide the whole frame while a face is believed there but not seen (lost and not yet "
                        "forgotten, or about to be found)")
    p.add_argument("--threshold", type=probability, default=None,
                   help="a face when its score is at least this (default: 0.3 for yunet, the model kind's otherwise)")
    p.add_argument("--check", metavar="LABELS",
                   help="MOTChallenge ground truth of the video (gt.txt: frame, id, left, top, width, height): print "
                        "the share of labelled faces left less than 90%% covered, tracked and frame by frame")
    p.set_defaults(run=_run_blur)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    known = (ConfigError, DatasetError, RunLocked, FileNotFoundError, ValueError, RuntimeError, PermissionError)
    try:
        return args.run(args)
    except known as error:
        if isinstance(error, OSError) and error.errno is not None:  # the system's own, not one of our messages
            print(f"error: {os_error_sentence(error)}", file=sys.stderr)
        else:
            print(f"error: {str(error).splitlines()[0] if str(error) else type(error).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as error:
        print(f"error: {os_error_sentence(error)}", file=sys.stderr)
        return 2


def _shortened(path: object, keep: int = 255) -> str:
    """A path as it is, unless it is longer than any one name may be: then its start and its length."""
    text = str(path)
    return text if len(text) <= keep else f"{text[:keep]}… ({len(text):,} characters)"


def os_error_sentence(error: OSError) -> str:
    """An operating-system error as one sentence naming the file it is about, when the error knows it."""
    reason = error.strerror or str(error) or type(error).__name__
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = f"the disk is full ({reason}); free some space and run it again"
    elif error.errno == errno.ENAMETOOLONG:
        reason = "the name is too long for the file system (at most 255 bytes a name, 4096 a path)"
    if error.filename is None:
        return reason[0].upper() + reason[1:]
    where = _shortened(error.filename)
    if error.filename2 is not None:
        where += f" -> {_shortened(error.filename2)}"
    return f"{where}: {reason}"
