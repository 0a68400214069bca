"""Detect: your model (or YuNet, or the Haar baseline) on the live webcam, every face tracked; or on a
photo or a video file."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import av
import cv2
import pandas as pd
import streamlit as st
from streamlit_webrtc import WebRtcMode, webrtc_streamer

from app_pages import ui
from facetracker.data import datasets as data_lib
from facetracker.inference import live, models
from facetracker.inference.blur import CoverSettings, blur_video, open_blur_detector
from facetracker.inference.detect import YUNET
from facetracker.inference.draw import draw_detection
from facetracker.inference.live import FRESH_FRAMES, LiveProcessor
from facetracker.inference.video import annotate_video
from facetracker.inference.webrtc import rtc_configuration
from facetracker.io import safety
from facetracker.labelling import capture


class State:
    """Every key this page keeps in `st.session_state`, in one place."""

    MODEL = "detect_model"
    """The chosen model key, kept across page switches (the selectbox's own state is not)."""
    DETECTOR = "detect_detector"
    """(model version, this viewer's Detector): see ui.session_detector."""
    PROCESSOR = "detect_processor"
    """The webcam's LiveProcessor, which the frame worker thread holds too."""
    VIDEO_RESULT = "detect_video_result"
    """(upload and settings, figures, boxed or blurred video): a rerun shows it without detecting again."""
    BLUR = "detect_blur"
    """Whether an uploaded video's faces are blurred (to share it) instead of boxed."""
    DATASET = "detect_dataset"
    """Prefix of the widgets choosing the dataset frames are saved into."""
    UPLOAD = "detect_upload"
    """The photo or video uploader."""
    WEBCAM = "detect"
    """The webcam component (streamlit-webrtc keeps its connection under it)."""


IMAGE_KINDS = ("jpeg", "png", "webp", "bmp")
VIDEO_KINDS = ("mp4", "webm", "avi", "mov")
# What the uploader offers; the content decides what a file is (Matroska has no sniffed kind).
UPLOAD_SUFFIXES = ["jpg", *IMAGE_KINDS, *VIDEO_KINDS, "mkv"]
# A minute of a webcam-rate video, processed while the person waits; see docs/speed.md.
VIDEO_MAX_FRAMES = 1800
# Each refresh is a (fragment) script run in the server that competes with the frames for the CPU.
FIGURES_EVERY_S = 2


def choose_model() -> str:
    choices = ui.model_choices()
    keys = list(choices.values())
    remembered = st.session_state.get(State.MODEL) or ui.newest_model_key() or YUNET
    index = keys.index(remembered) if remembered in keys else 0
    if all(ui.is_reference(key) for key in keys):
        st.info("No model is trained yet, so YuNet runs: a small face detector from OpenCV's model zoo that "
                "ships with the app. Train your own on the Train page and compare them here.")
    label = st.selectbox("Model", list(choices), index=index)
    ui.remember(State.MODEL, choices[label])
    if not ui.is_reference(choices[label]):
        ui.what_the_model_knows(Path(choices[label]), short=True)
    return choices[label]


def session_processor() -> LiveProcessor:
    live.end_silent_streams()  # a stream that died unreported must not keep the collector frozen
    if State.PROCESSOR not in st.session_state:
        st.session_state[State.PROCESSOR] = LiveProcessor()
    return st.session_state[State.PROCESSOR]


def queued_frames_callback(processor: LiveProcessor):
    """The webcam callback: runs in a worker thread, so it touches no st.* and only the processor.

    It gets every frame that arrived while the previous ones were processed (frames come in bursts)
    and returns one frame for each, so the video keeps the camera's rate.
    """

    async def callback(frames: list[av.VideoFrame]) -> list[av.VideoFrame]:
        try:
            fresh = frames[-FRESH_FRAMES:]
            images = processor.process_queue([frame.to_ndarray(format="bgr24") for frame in fresh],
                                             dropped=len(frames) - len(fresh))
            processed = []
            for frame, image in zip(fresh, images):
                out = av.VideoFrame.from_ndarray(image, format="bgr24")
                out.pts, out.time_base = frame.pts, frame.time_base
                processed.append(out)
            return processed
        except Exception as error:  # frames that cannot even be converted: pass them on as they came
            processor.record_error(error)
            return frames[-FRESH_FRAMES:]

    return callback


def live_figures(processor: LiveProcessor, playing: bool, follow_model: Callable[[], None]) -> None:
    """The webcam's figures, refreshed every FIGURES_EVERY_S while it plays; each refresh first lets
    `follow_model` move the webcam to a newer model file (a run still training saves one per epoch)."""

    @st.fragment(run_every=FIGURES_EVERY_S if playing else None)
    def figures() -> None:
        follow_model()
        stats = processor.stats()
        c1, c2, c3, c4 = st.columns(4)
        c1.metric("Frames/s through the model", f"{stats['fps']:.1f}",
                  help="Frames the model has no time for go out with its last box.")
        c2.metric("Camera frames/s", f"{stats['camera_fps']:.1f}")
        c3.metric("Model time", f"{stats['model_ms']:.1f} ms")
        c4.metric("Faces now", stats["faces_now"], help=f"Faces seen since START: {stats['faces_seen']}. "
                  "Each face keeps its number while it stays in view, and through a second out of sight.")
        st.caption(f"faces seen: {stats['faces_seen']} · processed frames: {stats['frames']} · "
                   f"with a face: {stats['detections']} · "
                   f"errors: {stats['errors']} · frames from the camera: {stats['camera_frames']}")
        if stats["errors"]:
            st.error(f"{stats['errors']} frame(s) failed and went out unprocessed. Last error: "
                     f"{ui.literal(ui.shown_text(str(stats['last_error'])))}")

    figures()


def save_frame_section(processor: LiveProcessor, model_key: str) -> None:
    st.subheader("Save the current frame into a dataset")
    st.caption("Collect more training data while you watch: keep good detections, and save frames where the "
               "model saw a face that is not there as no-face samples (hard negatives).")
    folder = ui.choose_dataset("Dataset to save into", key=State.DATASET)
    if folder is None:
        return
    c1, c2 = st.columns(2)
    as_face = c1.button("Save the frame with the box shown")
    as_negative = c2.button("Save the frame as no-face (the model fired wrongly)")
    if not (as_face or as_negative):
        return
    frame, detection = processor.last_frame()
    if frame is None:
        st.warning("No frame yet: press START above first.")
        return
    box = detection.box if (as_face and detection is not None) else None
    source = ui.model_name(model_key)
    try:
        saved = capture.save_capture(folder, frame, box, source=source, prefix="webcam" if as_face else "negative",
                                     root=ui.data_root())
    except (ValueError, OSError) as error:
        st.error(f"Could not save the frame: {ui.literal(ui.readable(error))}")
        return
    st.success(f"Saved {ui.literal(ui.shown_path(saved.image))} " + ("with its box" if box else "as a no-face sample")
               + "; correct it on the Dataset page if needed.")


def detect_image(content: bytes, detector) -> None:
    try:
        rgb = data_lib.read_image(content, max_side=1600)
    except data_lib.ImageError as error:
        st.error(f"Cannot read the image: {ui.literal(ui.readable(error))}")
        return
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    detection = detector.detect(bgr)
    draw_detection(bgr, detection)
    st.image(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), width="stretch",
             caption=(f"{len(detection.faces)} face{'s' if len(detection.faces) > 1 else ''}, best probability "
                      f"{detection.probability:.2f}" if detection.found
                      else f"no face (probability {detection.probability:.2f})") + f" · {detection.model_ms:.1f} ms")


def detect_video(uploaded, content: bytes, detector, settings: tuple, smooth: bool) -> None:
    cache_key = (uploaded.file_id, settings)
    result = st.session_state.get(State.VIDEO_RESULT)
    if result is None or result[0] != cache_key:
        bar = st.progress(0.0, text="Detecting on each frame…")
        with tempfile.TemporaryDirectory(prefix="facetracker-video-") as tmp:
            source, target = Path(tmp) / "upload", Path(tmp) / "boxed.mp4"
            source.write_bytes(content)
            try:
                figures = annotate_video(source, detector, target, VIDEO_MAX_FRAMES,
                                         progress=lambda done, total: bar.progress(
                                             min(done / total, 1.0), text=f"frame {done} of {total}"),
                                         name=uploaded.name, smooth=smooth)
            except ValueError as error:
                bar.empty()
                st.error(f"Cannot use this video: {ui.literal(ui.readable(error))}")
                return
            result = (cache_key, figures, target.read_bytes())
        bar.empty()
        st.session_state[State.VIDEO_RESULT] = result
    _, figures, video = result
    st.video(video, format="video/mp4")
    st.caption(f"{figures['frames']} frames (at most {VIDEO_MAX_FRAMES}), a face on {figures['with_face']}, "
               f"{figures['faces_seen']} faces seen, "
               f"model {figures['model_ms']:.1f} ms a frame")
    st.line_chart(pd.DataFrame({"face probability": figures["probabilities"]}), height=180,
                  x_label="frame", y_label="probability")


def blur_uploaded_video(uploaded, content: bytes, model_key: str, detector, version: tuple) -> None:
    """The video with every face blurred (`facetracker blur`), shown and offered for download."""
    cache_key = (uploaded.file_id, "blurred", version)
    result = st.session_state.get(State.VIDEO_RESULT)
    if result is None or result[0] != cache_key:
        bar = st.progress(0.0, text="Blurring every face…")
        with tempfile.TemporaryDirectory(prefix="facetracker-blur-") as tmp:
            source, target = Path(tmp) / "upload", Path(tmp) / "blurred.mp4"
            source.write_bytes(content)
            try:
                # YuNet counts faces from a lower score when they are hidden (see blur.REFERENCE_THRESHOLD)
                finder = open_blur_detector(model_key) if model_key == YUNET else detector
                done = blur_video(source, target, finder, CoverSettings(), name=uploaded.name,
                                  progress=lambda written, total: bar.progress(
                                      min(written / max(total, 1), 1.0), text=f"frame {written} of {total}"))
            except (ValueError, OSError) as error:
                bar.empty()
                st.error(f"Cannot blur this video: {ui.literal(ui.readable(error))}")
                return
            result = (cache_key, done, target.read_bytes())
        bar.empty()
        st.session_state[State.VIDEO_RESULT] = result
    _, done, video = result
    st.video(video, format="video/mp4")
    sound = "its sound kept" if done.sound_streams else "no sound"
    st.caption(f"{done.frames} frames, {done.faces_seen} faces followed and hidden, also where the model missed "
               f"them; {sound}")
    st.download_button("Download the blurred video", video, mime="video/mp4",
                       file_name=f"{Path(uploaded.name).stem or 'video'}-blurred.mp4")


def upload_section(model_key: str, threshold: float, smooth: bool) -> None:
    st.subheader("Detect on a photo or a video file")
    uploaded = st.file_uploader("Photo or video", type=UPLOAD_SUFFIXES, key=State.UPLOAD)
    if uploaded is None:
        return
    content = uploaded.getvalue()
    kind = safety.sniff_kind(content[:64])
    photo = kind in IMAGE_KINDS
    try:
        # The newest model of a run still training, as the webcam's; a photo on the runtime shaped for photos.
        version = ui.model_version(model_key, models.PHOTO if photo else models.LIVE)
        detector = ui.make_detector(model_key, threshold, version, look_closer=photo)
    except (ValueError, OSError, RuntimeError) as error:
        st.error(ui.literal(ui.readable(error)))
        return
    if photo:
        detect_image(content, detector)
    elif kind in VIDEO_KINDS or (kind is None and uploaded.name.lower().endswith(".mkv")):
        if st.toggle("Blur every face (to share the video)", key=State.BLUR,
                     help="Every face is blurred, also in the frames where the model misses it, and the sound is "
                          "kept; download the result below it."):
            blur_uploaded_video(uploaded, content, model_key, detector, version)
        else:
            detect_video(uploaded, content, detector, (version, threshold, smooth), smooth)
    else:
        st.error(f"{ui.literal(uploaded.name)}: its content is neither an image (JPEG, PNG, WebP, BMP) nor a video "
                 "(MP4, WebM, AVI, MOV)")


def main() -> None:
    st.title("Detect")
    model_key = choose_model()
    c1, c2 = st.columns(2)
    default = ui.model_threshold(model_key)
    threshold = c1.slider("Threshold: a face when the probability is at least", 0.05, 0.95, default, 0.05,
                          disabled=ui.is_reference(model_key), key=f"detect_threshold_{default}")
    smooth = c2.toggle("Smooth the boxes over frames", value=True,
                       help="Each face's box is held steady while the face is still and follows it when it moves, "
                            "on the webcam and on videos.")
    processor = session_processor()
    processor.tracker.smooth = smooth
    try:
        processor.detector = ui.session_detector(State.DETECTOR, model_key, threshold)
    except Exception as error:  # a damaged or foreign model file: say so, keep the page usable
        processor.detector = None
        st.error(f"Cannot load this model: {ui.literal(ui.readable(error))}")
    else:
        runtime = getattr(processor.detector, "runtime", None)
        name = ui.literal(ui.model_name(model_key))
        st.caption(f"Running {name} as {runtime.name.upper()} on a {runtime.input_wh[0]}x{runtime.input_wh[1]} px input"
                   if runtime is not None else f"Running the {name} on the grey frame")
    rtc, warning = rtc_configuration()
    if warning:
        st.warning(warning)
    ctx = webrtc_streamer(key=State.WEBCAM, mode=WebRtcMode.SENDRECV, rtc_configuration=rtc,
                          media_stream_constraints={"video": True, "audio": False},
                          queued_video_frames_callback=queued_frames_callback(processor),
                          on_video_ended=processor.end_stream, async_processing=True)
    st.caption("Press START and allow the camera. The video comes back with a numbered box on every face, and in "
               "its corner how many frames/s go through the model and its time per frame.")

    unusable: set = set()  # model versions that failed to load: tried once per full run, not every refresh

    def follow_model() -> None:
        if processor.detector is None:  # this run's model did not load: the page says why
            return
        version = None
        try:
            version = ui.model_version(model_key)
            if version not in unusable:
                processor.detector = ui.session_detector(State.DETECTOR, model_key, threshold)
        except Exception:  # the stream keeps the model it has; the page's next full run says what is wrong
            unusable.add(version)
            ui.log.warning("the webcam keeps its model: the newer one cannot be loaded", exc_info=True)

    live_figures(processor, bool(ctx.state.playing), follow_model)
    save_frame_section(processor, model_key)
    upload_section(model_key, threshold, smooth)


with ui.page_guard():
    main()
