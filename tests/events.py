"""Reads TensorBoard event files back (the TFRecord framing, tensorboardX's protos),
keeping what TensorBoard itself shows: an event that restarts a run at step s (a
SessionLog START, written by SummaryWriter(purge_step=s)) hides earlier events at
steps >= s, as TensorBoard's EventAccumulator does."""

import struct
from pathlib import Path

from tensorboardX.proto import event_pb2


def read_records(path: Path):
    data = path.read_bytes()
    i = 0
    while i < len(data):
        (length,) = struct.unpack("<Q", data[i:i + 8])
        yield data[i + 12:i + 12 + length]
        i += 12 + length + 4  # length, its crc, the data, its crc


def read_events(logdir) -> list:
    """[(kind, tag, step, value)] in the order TensorBoard would show them; kind is
    scalar, image or text."""
    shown = []
    for path in sorted(Path(logdir).glob("events.out.tfevents.*")):
        for raw in read_records(path):
            event = event_pb2.Event.FromString(raw)
            if event.HasField("session_log") and event.session_log.status == 1 and event.step:
                shown = [e for e in shown if e[2] < event.step]  # a purge
            for v in event.summary.value:
                if v.HasField("simple_value"):
                    shown.append(("scalar", v.tag, event.step, v.simple_value))
                elif v.HasField("image"):
                    shown.append(("image", v.tag, event.step, v.image.encoded_image_string))
                elif v.HasField("tensor"):
                    tag = v.tag.split("/")[0]  # add_text writes "<tag>/text_summary"
                    shown.append(("text", tag, event.step, v.tensor.string_val[0].decode()))
    return shown
