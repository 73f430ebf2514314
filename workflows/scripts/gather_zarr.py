#!/usr/bin/python3
"""Concatenates `dnamba embed` Zarr stores (parts of one run, in order) into one store.

Usage: gather_zarr.py OUT.zarr PART1.zarr PART2.zarr ...
Arrays whose first dimension is "row" (embedding, contig, start, end, strand, read) or "read" (the
per-read arrays) are concatenated in part order; the "read" index array is shifted by the reads of the
parts before it. The parts must come from one dnamba embed setup (same model, layer, pooling and
contig list); the store attributes are the first part's with "rows" and "reads" summed and the part
list in "gathered_from". Chunks, dtypes and compressors are kept. The output appears only when complete.
"""
import os, shutil, sys

import numpy as np
import zarr

out, parts = sys.argv[1].rstrip("/"), sys.argv[2:]
if not parts:
    sys.exit("gather_zarr.py: no parts given")
srcs = [zarr.open_group(p, mode="r") for p in parts]
first = dict(srcs[0].attrs)
for p, g in zip(parts, srcs):
    a = dict(g.attrs)
    for key in ("contigs", "model", "layer", "d_model", "input_type"):
        if key in first and a.get(key) != first.get(key):
            sys.exit(f"gather_zarr.py: {p}: attribute '{key}' differs from {parts[0]}: parts of different runs?")

tmp = os.path.join(os.path.dirname(os.path.abspath(out)), "." + os.path.basename(out) + ".tmp")
shutil.rmtree(tmp, ignore_errors=True)
dst = zarr.open_group(tmp, mode="w")
attrs = dict(first)
total = {"row": 0, "read": 0}
BLOCK = 1 << 16
try:
    for name, a0 in srcs[0].arrays():
        dim = a0.attrs.get("_ARRAY_DIMENSIONS", ["row"])[0]
        d = dst.create(name, shape=(0,) + a0.shape[1:], chunks=a0.chunks, dtype=a0.dtype,
                       compressor=a0.compressor, filters=a0.filters, fill_value=a0.fill_value)
        d.attrs.update(dict(a0.attrs))
        offset = 0
        for p, g in zip(parts, srcs):
            if name not in g:
                sys.exit(f"gather_zarr.py: {p}: no array '{name}' (it is in {parts[0]})")
            a = g[name]
            if a.shape[1:] != a0.shape[1:] or a.dtype != a0.dtype:
                sys.exit(f"gather_zarr.py: {p}/{name}: shape {a.shape} / {a.dtype} does not match {parts[0]}")
            for i in range(0, a.shape[0], BLOCK):
                v = a[i:i + BLOCK]
                if name == "read":
                    v = v + np.asarray(offset, dtype=v.dtype)
                d.append(v, axis=0)
            if name == "read":
                offset += g["read_length"].shape[0] if "read_length" in g else 0
        total[dim] = d.shape[0] if dim in total else total.get(dim, 0)
    if "rows" in attrs:
        attrs["rows"] = total["row"]
    if "reads" in attrs:
        attrs["reads"] = total["read"]
    attrs["gathered_from"] = [os.path.basename(p.rstrip("/")) for p in parts]
    dst.attrs.update(attrs)
except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
shutil.rmtree(out, ignore_errors=True)
os.replace(tmp, out)
print(f"{out}: {total['row']} rows from {len(parts)} parts", file=sys.stderr)
