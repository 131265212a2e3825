"""Finding objects in a video: indexing speed, query latency, decode memory, and whether the needles are found.

A generated 10-minute video (``moesaic.tasks.samples.write_needle_video``, seed 0: a plain textured backdrop;
eight objects each shown for 1.5–4 s at known times) is indexed with the starter embedder (OCR off),
then every object is looked for by words with ``find`` (cached index). Reported:

- indexing: sampled frames, wall and CPU seconds (this process; on a shared machine the CPU time is the
  steadier number), frames embedded per second, video seconds per second;
- peer for sampling: uniform 4 fps sampling (the floor rate that gives a 1.5 s event six frames), counted on
  the same video with the same decoder; its embedding time is not run (same embedder, same cost per frame);
- decode memory: peak RSS of decoding the video with ``sample_frames`` (frames scaled by the decoder to
  448 px, streamed) vs ``moesaic video``'s ``decode_frames`` keeping full-resolution frames at 4 fps
  (``max_side`` above the video's size), each in its own process;
- query latency: ``find`` on the indexed video (index check + query embedding + ranking), p50/p95;
- accuracy: per needle, the top range's IoU with the truth and its boundary errors.

``--calibrate`` instead scores present and absent queries on a separate 30 s validation video (other
objects, other colours than the tests use) and prints the thresholds that separate them: that is how
``min_score`` and ``contrast`` (moesaic.tasks.search.query) were chosen.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/video_search.py [--minutes 10] [--calibrate]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EVENTS = (("red-ball", 47.0, 48.5), ("blue-t-shirt", 95.0, 99.0), ("green-bag", 160.0, 162.0),
          ("yellow-shoe", 230.5, 232.0), ("black-ball", 301.0, 304.0), ("yellow-bag", 377.0, 378.5),
          ("green-t-shirt", 450.0, 453.0), ("blue-shoe", 540.0, 542.5))
VALIDATION = (("yellow-ball", 4.0, 6.0), ("green-bag", 14.0, 15.5), ("black-shoe", 22.0, 25.0))
PRESENT = {"a yellow ball": 0, "a green bag": 1, "a black shoe": 2, "something yellow": 0, "a bag": 1}
ABSENT = ("a red car", "a dog", "a banana", "a person", "a purple umbrella", "a white cup", "a bicycle",
          "an orange cat", "a laptop", "a blue t-shirt", "a red ball")


def _words(name: str) -> str:
    colour, _, kind = name.partition("-")
    return f"a {colour} {kind.replace('-', ' ')}"


def _iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter / (max(a[1], b[1]) - min(a[0], b[0]))


def _peak_rss(code: str) -> float:
    """Peak RSS (MiB) of a fresh Python process running ``code``."""
    out = subprocess.run([sys.executable, "-c", code + "\nimport resource; print(resource.getrusage("
                          "resource.RUSAGE_SELF).ru_maxrss)"], check=True, capture_output=True, text=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def calibrate(work: Path) -> None:
    from moesaic.tasks.samples import draw_product, write_needle_video
    from moesaic.tasks.search import FindConfig, find

    video = write_needle_video(work / "validation.mp4", 30.0, VALIDATION)
    db = str(work / "validation.db")
    rows = []
    for query, event in [*PRESENT.items(), *[(q, None) for q in ABSENT]]:
        r = find(FindConfig(video=str(video), query=query, db=db, ocr=False, contrast=0.0, min_score=-1.0))
        rows.append((query, event, r.best, r.typical, r.best_time))
    for name, event in (("green-bag", 1), ("black-shoe", 2)):
        colour, _, kind = name.partition("-")
        draw_product(kind, colour).save(work / f"{name}.png")
        r = find(FindConfig(video=str(video), image=str(work / f"{name}.png"), db=db, ocr=False, contrast=0.0,
                            min_score=-1.0))
        rows.append((f"image:{name}", event, r.best, r.typical, r.best_time))
    print(f"{'query':22s} {'present':>8s} {'best':>6s} {'typical':>7s} {'contrast':>8s}  best frame in event")
    for query, event, best, typical, at in rows:
        inside = "" if event is None else str(VALIDATION[event][1] <= at < VALIDATION[event][2])
        print(f"{query:22s} {str(event is not None):>8s} {best:6.3f} {typical:7.3f} {best - typical:8.3f}  {inside}")
    present = [(r[2], r[2] - r[3]) for r in rows if r[1] is not None]
    absent = [(r[2], r[2] - r[3]) for r in rows if r[1] is None]
    grid = [(m / 100, c / 100) for m in range(10, 80) for c in range(0, 40)]

    def accepted(pairs: list[tuple[float, float]], ms: float, c: float) -> int:
        return sum(best >= ms and contrast >= c for best, contrast in pairs)

    safe = [(ms, c) for ms, c in grid if accepted(absent, ms, c) == 0]
    most = max(accepted(present, ms, c) for ms, c in safe)
    chosen = [(ms, c) for ms, c in safe if accepted(present, ms, c) == most]
    ms = statistics.median(sorted({p[0] for p in chosen}))
    c = statistics.median(sorted({p[1] for p in chosen if p[0] == min(chosen, key=lambda q: abs(q[0] - ms))[0]}))
    print(f"no absent query accepted and {most} of {len(present)} present ones found with min_score "
          f"{min(p[0] for p in chosen):.2f}–{max(p[0] for p in chosen):.2f}; chosen min_score {ms:.2f}, contrast {c:.2f}")


def run(args: argparse.Namespace, work: Path) -> None:
    from moesaic.tasks.samples import write_needle_video
    from moesaic.tasks.search import FindConfig, FrameSampling, IndexConfig, find, index, sample_frames

    seconds = args.minutes * 60.0
    events = tuple(e for e in EVENTS if e[2] <= seconds)
    start = time.perf_counter()
    video = write_needle_video(work / "long.mp4", seconds, events, fps=args.fps, size=(args.width, args.height))
    print(f"video: {seconds:.0f} s, {args.width}x{args.height}, {args.fps} fps, {video.stat().st_size / 2**20:.1f} MiB "
          f"(written in {time.perf_counter() - start:.0f} s)")

    start, cpu = time.perf_counter(), time.process_time()
    ours = sum(1 for _ in sample_frames(video))
    decode_s, decode_cpu = time.perf_counter() - start, time.process_time() - cpu
    uniform = sum(1 for _ in sample_frames(video, FrameSampling(floor_fps=4.0, change=1.0)))
    print(f"sampling: ours {ours} frames (decode + sample: {decode_s:.1f} s wall, {decode_cpu:.1f} s CPU); "
          f"uniform 4 fps {uniform} frames; ratio {uniform / ours:.2f}x fewer frames to embed")

    code = f"from moesaic.tasks.search.frames import sample_frames\nn = sum(1 for _ in sample_frames({str(video)!r}))"
    peer = (f"from moesaic.tasks.video import decode_frames\n"
            f"f, d = decode_frames({str(video)!r}, keep_fps=4.0, max_side=100000)")
    ours_mb, peer_mb = _peak_rss(code), _peak_rss(peer)
    print(f"decode peak RSS: sample_frames {ours_mb:.0f} MiB; decode_frames full-res at 4 fps {peer_mb:.0f} MiB "
          f"({peer_mb / ours_mb:.1f}x)")

    db = str(work / "long.db")
    start, cpu = time.perf_counter(), time.process_time()
    built = index(IndexConfig(source=str(video), db=db, ocr=False))
    index_s, index_cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"index: {built.frames_added} frames in {index_s:.1f} s wall / {index_cpu:.1f} s CPU = "
          f"{built.frames_added / index_s:.2f} frames/s wall, {built.frames_added / index_cpu:.2f} frames per CPU s; "
          f"{seconds / index_s:.2f} video s per wall s (model loading included; load average {os.getloadavg()[0]:.1f})")

    latencies, cpus, lines = [], [], []
    for name, lo, hi in events:
        start, cpu = time.perf_counter(), time.process_time()
        r = find(FindConfig(video=str(video), query=_words(name), db=db, ocr=False))
        latencies.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
        top = r.ranges[0] if r.ranges else None
        if top is None:
            lines.append(f"  {_words(name):18s} truth {lo:6.1f}–{hi:6.1f}  no range")
            continue
        lines.append(f"  {_words(name):18s} truth {lo:6.1f}–{hi:6.1f}  top {top.start:6.2f}–{top.end:6.2f}  "
                     f"IoU {_iou((lo, hi), (top.start, top.end)):.2f}  |Δstart| {abs(top.start - lo):.2f}  "
                     f"|Δend| {abs(top.end - hi):.2f}  ranges {len(r.ranges)}")
    latencies.sort()
    p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
    print(f"find latency (cached index, {len(latencies)} queries): p50 {statistics.median(latencies) * 1000:.0f} ms, "
          f"p95 {p95 * 1000:.0f} ms; CPU p50 {statistics.median(cpus) * 1000:.0f} ms (the first includes loading MiniLM)")
    print("\n".join(lines))
    print(json.dumps({"frames": built.frames_added, "index_s": round(index_s, 1), "index_cpu_s": round(index_cpu, 1),
                      "uniform_frames": uniform,
                      "ours_rss_mb": round(ours_mb), "peer_rss_mb": round(peer_mb)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--calibrate", action="store_true", help="choose thresholds on the validation video")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        calibrate(Path(tmp)) if args.calibrate else run(args, Path(tmp))
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
