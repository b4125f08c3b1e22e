"""How many CAN frames per second one core decodes into canonical samples.

Run from the project root: ``.venv/bin/python benchmarks/bench_can_decode.py``.

Frames are built before timing; each figure is the best of several runs of
``VehicleCanDecoder.decode`` over one batch (routing, timestamps, sample objects
included). The target is 100,000 frames/s per workload: a busy truck bus carries about
2,000 frames/s, so one core then keeps up with 50 vehicles' raw logs.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from telematics.can.dbc import DbcDecoder  # noqa: E402
from telematics.can.decoder import VehicleCanDecoder  # noqa: E402
from telematics.can.frames import CanFrame, parse_candump  # noqa: E402

BATCH = 200_000
RUNS = 5
TARGET = 100_000
T0 = 1_700_000_000.0


def frames_from(templates: list[tuple[int, bool, str]], count: int) -> list[CanFrame]:
    out = []
    for i in range(count):
        can_id, extended, data = templates[i % len(templates)]
        out.append(CanFrame(T0 + i * 0.0005, can_id, extended, bytes.fromhex(data)))
    return out


OBD2 = [
    (0x7E8, False, "04410C1AF8AAAAAA"),  # rpm
    (0x7E8, False, "03410D12AAAAAAAA"),  # speed
    (0x7E8, False, "0341057BAAAAAAAA"),  # coolant
    (0x7E8, False, "0441100190AAAAAA"),  # MAF
    (0x7E8, False, "03412F40AAAAAAAA"),  # fuel level
    (0x7E8, False, "04415E0190AAAAAA"),  # fuel rate
    (0x7E8, False, "0641A6000F4240AA"),  # odometer
    (0x7E8, False, "0643020104C158AA"),  # two stored DTCs
]

J1939 = [
    (0x0CF004FE, True, "FFFFFF6019FFFFFF"),  # EEC1
    (0x18FEF100, True, "FF00320000000000"),  # CCVS
    (0x18FEEE00, True, "7BFFFFFFFFFFFFFF"),  # ET1
    (0x18FEF200, True, "9001FFFFFFFFFFFF"),  # LFE
    (0x18FEFC17, True, "FFC8FFFFFFFFFFFF"),  # DD
    (0x18FEE500, True, "10270000FFFFFFFF"),  # HOURS
    (0x18FEC1EE, True, "40420F00FFFFFFFF"),  # VDHR
    (0x18FEE900, True, "FFFFFFFF10270000"),  # LFC
    (0x18FEF500, True, "FFFFFF4025FFFFFF"),  # AMB
    (0x18FECA00, True, "04FF6E000005FFFF"),  # DM1, one fault
]


def synthetic_dbc(messages: int = 331, signals: int = 6) -> str:
    """A DBC the size of opendbc's ford_lincoln_base_pt.dbc (331 messages)."""
    lines = ['VERSION ""', "NS_ :", "BS_:", "BU_: ECU"]
    for m in range(messages):
        lines.append(f"BO_ {0x100 + m} MSG_{m}: 8 ECU")
        for s in range(signals):
            lines.append(
                f' SG_ S{s} : {s * 8 + 7}|8@0+ (0.5,-10) [0|0] "" Vector__XXX'
                if s % 2
                else f' SG_ S{s} : {s * 8}|8@1+ (0.25,0) [0|0] "" Vector__XXX'
            )
    return "\n".join(lines) + "\n"


def bench(name: str, decoder: VehicleCanDecoder, frames: list[CanFrame]) -> float:
    best = float("inf")
    for _ in range(RUNS):
        start = time.perf_counter()
        samples, faults, errors, _reports = decoder.decode(frames)
        best = min(best, time.perf_counter() - start)
    if errors:
        raise SystemExit(f"{name}: unexpected errors, first: {errors[0]}")
    rate = len(frames) / best
    mark = "ok" if rate >= TARGET else "BELOW TARGET"
    print(
        f"{name:<58} {rate:>12,.0f} frames/s  "
        f"({len(samples) / len(frames):.2f} samples, {len(faults) / len(frames):.2f} faults"
        f" per frame)  {mark}"
    )
    return rate


def main() -> None:
    if hasattr(os, "sched_setaffinity"):  # pin to one core so the figure is per core
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    print(f"Python {platform.python_version()} on {platform.machine()}, pinned to one core,")
    print(f"batch {BATCH:,} frames, best of {RUNS} runs\n")

    bench("OBD-II replies (7 PIDs + mode 03)", VehicleCanDecoder(), frames_from(OBD2, BATCH))
    bench("J1939 broadcasts (9 PGs + DM1)", VehicleCanDecoder(), frames_from(J1939, BATCH))

    toyota_text = (ROOT / "tests/data/can/toyota_iQ_2009_can.dbc").read_text()
    toyota = DbcDecoder(
        toyota_text,
        {"ENGINE.MOTOR_RPM": "engine_speed", "VEHICLE_DYNAMICS.VEHICLE_SPEED": "vehicle_speed"},
    )
    every_message = [
        (m.frame_id, False, "00" * m.length) for m in toyota.database.messages
    ]  # one frame of each of the 52 messages: a whole bus, 2 of them mapped
    bench(
        f"DBC toyota_iQ_2009_can ({len(every_message)} msgs), whole bus",
        VehicleCanDecoder(dbc=toyota),
        frames_from(every_message, BATCH),
    )
    mapped_only = [(452, False, "0BB8000000000000"), (180, False, "00000000001F4000")]
    bench(
        "DBC toyota_iQ_2009_can, mapped frames only (all decoded)",
        VehicleCanDecoder(dbc=toyota),
        frames_from(mapped_only, BATCH),
    )

    big_text = synthetic_dbc()
    started = time.perf_counter()
    big = DbcDecoder(big_text, {f"MSG_{m}.S{m % 6}": "vehicle_speed" for m in range(331)})
    built = time.perf_counter() - started
    all_mapped = [(0x100 + m, False, "1122334455667788") for m in range(331)]
    bench(
        "DBC synthetic 331 msgs, every frame mapped and decoded",
        VehicleCanDecoder(dbc=big),
        frames_from(all_mapped, BATCH),
    )
    print(f"\n(synthetic 331-message DBC: {len(big_text):,} chars, decoder built in {built:.2f} s)")

    text = "\n".join(
        f"({f.timestamp:.6f}) can0 {f.can_id:08X}#{f.data.hex().upper()}"
        for f in frames_from(J1939, BATCH)
    )
    best = float("inf")
    for _ in range(RUNS):
        start = time.perf_counter()
        parse_candump(text)
        best = min(best, time.perf_counter() - start)
    print(f"candump -L text parsing: {BATCH / best:,.0f} lines/s")


if __name__ == "__main__":
    main()
