#!/usr/bin/env python3
"""The comparator's report.html, rendered by headless Chromium.

Runs a small `snapdisk compare` (two methods, two sizes, short phases), then
  - dumps the DOM Chromium built: every chart is an <svg> with data in it
    (polylines with points, bars with values), and the claims table is there;
  - screenshots the page and decodes the PNG (zlib, no imaging library):
    the charts drew coloured pixels (lines, bars, bands), not a blank page.
Fails with the reason when Chromium is missing or cannot start (tools/setup.sh
installs it); never skips.

  tests/report_render_test.py --snapdisk build/release/tools/snapdisk --workdir DIR
"""
import argparse
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib


def fail(message):
    print("FAIL: " + message, file=sys.stderr)
    sys.exit(1)


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    fail("no chromium on PATH: install Debian's chromium package (tools/setup.sh does)")


def chromium(browser, args, timeout=120):
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--no-first-run", "--hide-scrollbars", "--user-data-dir=" + ARGS.workdir + "/profile"] + args
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        fail("chromium failed (exit %d): %s\n%s" % (r.returncode, " ".join(cmd), r.stderr[-2000:]))
    return r.stdout


def decode_png(path):
    """Width, height and rows of RGB(A) bytes of an 8-bit PNG."""
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        fail(path + " is not a PNG")
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            if depth != 8 or color not in (2, 6):
                fail("unexpected PNG format: depth %d colour %d" % (depth, color))
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(line)
        prev = line
    return width, height, bpp, rows


def main():
    os.makedirs(ARGS.workdir, exist_ok=True)
    out = os.path.join(ARGS.workdir, "report")
    shutil.rmtree(out, ignore_errors=True)
    scenario = os.path.join(ARGS.workdir, "scenario.json")
    with open(scenario, "w") as f:
        json.dump({"methods": ["snapshot", "full"], "written": ["16M", "32M"],
                   "foreground": {"iops": 1000, "seconds_before": 1, "seconds_after": 1},
                   "rpo_hours": 6, "rpo_failures": 1, "log_frequencies": ["5m", "30m"]}, f)
    r = subprocess.run([ARGS.snapdisk, "compare", "--scenario", scenario, "--out", out],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        fail("snapdisk compare failed (exit %d): %s" % (r.returncode, r.stderr[-2000:]))
    page = "file://" + os.path.abspath(os.path.join(out, "report.html"))
    browser = find_chromium()

    dom = chromium(browser, ["--dump-dom", page])
    svgs = re.findall(r"<svg\b.*?</svg>", dom, re.S)
    # Timelines (2), p99 and IOPS bars, RTO, RPO.
    if len(svgs) < 6:
        fail("%d charts in the rendered DOM, expected at least 6" % len(svgs))
    for i, svg in enumerate(svgs):
        points = [int(n) for n in re.findall(r'class="series" data-points="(\d+)"', svg)]
        bars = re.findall(r'class="bar" data-value="([0-9.e+-]+)"', svg)
        if not points and not bars:
            fail("chart %d has neither series nor bars" % i)
        if points and max(points) == 0:
            fail("chart %d has only empty series" % i)
        if bars and all(float(v) == 0 for v in bars):
            fail("chart %d has only zero bars" % i)
    if "holds" not in dom or "<table" not in dom:
        fail("the claims table is missing from the rendered page")

    png = os.path.join(ARGS.workdir, "report.png")
    if os.path.exists(png):
        os.remove(png)
    chromium(browser, ["--screenshot=" + png, "--window-size=1400,4000", page])
    if not os.path.exists(png):
        fail("chromium wrote no screenshot")
    width, height, bpp, rows = decode_png(png)
    coloured = 0
    for line in rows:
        for x in range(0, width * bpp, bpp * 2):  # every other pixel
            r_, g, b = line[x], line[x + 1], line[x + 2]
            if max(r_, g, b) - min(r_, g, b) > 60:
                coloured += 1
    print("rendered %dx%d, %d charts, %d coloured pixels (sampled)" % (width, height, len(svgs), coloured))
    if coloured < 2000:
        fail("only %d coloured pixels: the charts did not draw" % coloured)
    print("PASS")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--snapdisk", required=True)
    parser.add_argument("--workdir", required=True)
    ARGS = parser.parse_args()
    main()
