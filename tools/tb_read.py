"""Read a v3 run's TensorBoard files with TensorBoard itself and print what it sees (used by the test suite).

usage: tb_read.py LOGDIR
Prints one line per tag: "scalar TAG N FIRST_STEP FIRST_VALUE" or "image TAG N STEP WIDTH HEIGHT"."""
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main():
    ea = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0, "images": 0})
    ea.Reload()
    tags = ea.Tags()
    for tag in sorted(tags["scalars"]):
        s = ea.Scalars(tag)
        print(f"scalar {tag} {len(s)} {s[0].step} {s[0].value:.9g}")
    for tag in sorted(tags["images"]):
        im = ea.Images(tag)
        print(f"image {tag} {len(im)} {im[0].step} {im[0].width} {im[0].height}")


if __name__ == "__main__":
    main()
