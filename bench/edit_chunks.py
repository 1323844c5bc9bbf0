"""What a 1 MiB edit costs to send, by chunk sizes: the chunking alone, no daemons.

For each set of FastCDC sizes, ``--trials`` times: a random group seed, a random 1 MiB
overwrite in ``--mb`` MiB of random data; the bytes of the edited data's chunks that the
original does not have, plus the chunk list of a 1 GiB file's new version (``REF_BYTES`` a
chunk), in MiB. ``bench/folder.py --edit-mb 1024`` measures the same on the wire, once per
group; this shows the spread over many seeds and edit places. Prints one JSON line per set:
median, 90th percentile, largest, and how many trials went over 2 MiB.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics

import blake3
from _util import report
from pyfastcdc import FastCDC

REF_BYTES = 45  # a chunk reference in a Put, msgpack: feed index, seq, size, 32-byte id
SETS = [(256, 64, 1024), (256, 64, 512), (128, 32, 512), (64, 16, 256)]  # KiB: avg, min, max


def cut(data: bytes, avg: int, lo: int, hi: int, seed: int) -> list[bytes]:
    cdc = FastCDC(avg, min_size=lo, max_size=hi, normalized_chunking=2, seed=seed)
    return [bytes(c.data) for c in cdc.cut_buf(data)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--mb", type=int, default=48)
    args = p.parse_args()
    rng = random.Random(1)
    data = rng.randbytes(args.mb << 20)
    for avg, lo, hi in SETS:
        sent = []
        for _ in range(args.trials):
            seed = rng.getrandbits(62) or 1
            at = rng.randrange(len(data) // 10, len(data) * 9 // 10 - (1 << 20))
            before = cut(data, avg << 10, lo << 10, hi << 10, seed)
            have = {blake3.blake3(c).digest() for c in before}
            edited = data[:at] + os.urandom(1 << 20) + data[at + (1 << 20):]
            new = sum(len(c) for c in cut(edited, avg << 10, lo << 10, hi << 10, seed)
                      if blake3.blake3(c).digest() not in have)
            chunk_list = (1 << 30) / (len(data) / len(before)) * REF_BYTES
            sent.append((new + chunk_list) / (1 << 20))
        sent.sort()
        report(bench="edit-chunks", avg_kib=avg, min_kib=lo, max_kib=hi, trials=args.trials,
               median_mib=round(statistics.median(sent), 2), p90_mib=round(sent[int(len(sent) * 0.9)], 2),
               max_mib=round(sent[-1], 2), over_2_mib=sum(s > 2 for s in sent))


if __name__ == "__main__":
    main()
