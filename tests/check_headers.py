#!/usr/bin/env python3
"""Each header compiles on its own (house style: a header includes what it
uses). Compiles every project header alone in an empty translation unit with
the project's warning flags; CUDA-facing headers are compiled as C too."""
import os
import subprocess
import sys
import tempfile

src = os.environ.get("HSQ_SRC") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
cc = os.environ.get("CC", "cc")
dirs = ["schemas", "common", "daemon", "worker", "client", "kernels"]
flags = ["-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", "-I", src]
failed = 0
count = 0
with tempfile.TemporaryDirectory() as tmp:
    for d in dirs:
        top = os.path.join(src, d)
        if not os.path.isdir(top):
            continue
        for root, _, files in os.walk(top):
            for f in sorted(files):
                if not f.endswith(".h"):
                    continue
                rel = os.path.relpath(os.path.join(root, f), src)
                unit = os.path.join(tmp, "unit.c")
                with open(unit, "w") as u:
                    u.write('#include "%s"\n' % rel)
                    u.write('#include "%s"\n' % rel)  # include guards work
                r = subprocess.run([cc] + flags + [unit], capture_output=True, text=True)
                count += 1
                if r.returncode != 0:
                    failed += 1
                    print("FAIL %s\n%s" % (rel, r.stderr))
print("%d headers, %d failed" % (count, failed))
sys.exit(1 if failed or count == 0 else 0)
