"""Peak RSS of a command, and which mappings hold it when it passes a threshold.

    python benchmarks/rss_watch.py [--above MB] [--hog S] [--out PREFIX] -- COMMAND...

Samples the command's VmRSS every 0.1 s. The first three times it is above --above MB,
writes the largest mappings of /proc/PID/smaps (resident kB, address range, name) to
PREFIX.smaps0..2, so a spike names its mapping: [heap] is malloc's main arena (brk),
anonymous ranges are mmap (other arenas, big blocks, Python's arenas). --hog S runs a
busy process beside it for the first S seconds, as the benchmarks' alternating runs do
(the baby GPT's RSS spikes were seen only under such competition, 2026-12-03).
Prints one line: peak MB, when, seconds, dumps.
"""

import argparse
import re
import subprocess
import sys
import time


def resident(pid: int) -> int:
    """VmRSS of the process in kB."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


def largest_mappings(pid: int, n: int = 15) -> list[tuple[int, str]]:
    """The n mappings with the most resident kB: (kB, smaps header line)."""
    with open(f"/proc/{pid}/smaps") as f:
        blocks = re.split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", f.read())
    sizes = []
    for block in blocks:
        rss = re.search(r"^Rss:\s+(\d+) kB", block, re.M)
        if rss:
            sizes.append((int(rss.group(1)), block.split("\n", 1)[0]))
    return sorted(sizes, reverse=True)[:n]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--above", type=float, default=750, help="MB that trigger a dump")
    parser.add_argument("--hog", type=float, default=0, help="seconds of a busy neighbour")
    parser.add_argument("--out", default="rss", help="prefix of the dump files")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --")
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.hog else None
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    peak, peak_at, dumps, next_dump = 0, 0.0, 0, 0.0
    while proc.poll() is None:
        now = time.perf_counter() - start
        if hog and now > args.hog:
            hog.kill()
            hog = None
        try:
            kb = resident(proc.pid)
            if kb > peak:
                peak, peak_at = kb, now
            if kb > args.above * 1024 and dumps < 3 and now >= next_dump:
                lines = [f"{size} {head}" for size, head in largest_mappings(proc.pid)]
                with open(f"{args.out}.smaps{dumps}", "w") as f:
                    f.write(f"t {now:.1f} s, VmRSS {kb} kB\n" + "\n".join(lines) + "\n")
                dumps, next_dump = dumps + 1, now + 1.0  # a second apart: the spike's course
        except (OSError, StopIteration):  # the process is ending
            pass
        time.sleep(0.1)
    if hog:
        hog.kill()
    print(f"peak {peak / 1024:.0f} MB at {peak_at:.1f} s; exit {proc.returncode} after "
          f"{time.perf_counter() - start:.1f} s; {dumps} dumps ({args.out}.smaps*)")
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
