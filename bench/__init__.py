"""`python -m bench`: the gate measured against a direct call to the mock upstream.

Start the mock and the gate on loopback, load both the same way in the same run and
print one table (and `bench/results/latest.json`). `--smoke` runs every code path for a
few seconds with tiny numbers, so the harness cannot rot (tests/test_bench_smoke.py).
"""
