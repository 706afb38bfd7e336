"""Burns CPU in named functions under the real `pyroscope-io` agent, then flushes and exits.

Usage: python probe.py <server url> <application name> <tenant> <seconds>
"""

import sys
import time

import pyroscope


def pyrite_probe_fibonacci(n):
    return n if n < 2 else pyrite_probe_fibonacci(n - 1) + pyrite_probe_fibonacci(n - 2)


def pyrite_probe_busy_loop(rounds):
    x = 0
    for i in range(rounds):
        x = (x * 31 + i) % 1_000_003
    return x


def main():
    url, app, tenant, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    pyroscope.configure(
        application_name=app,
        server_address=url,
        tenant_id=tenant,
        tags={"agent": "python"},
        upload_interval=2,
    )
    deadline = time.monotonic() + seconds
    sink = 0
    while time.monotonic() < deadline:
        sink += pyrite_probe_fibonacci(20)
        sink += pyrite_probe_busy_loop(100_000)
    # shutdown() stops the profiler and uploads what it still holds.
    ok = pyroscope.shutdown()
    print("done", sink % 7, ok, flush=True)


if __name__ == "__main__":
    main()
