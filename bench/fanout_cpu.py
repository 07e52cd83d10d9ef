"""Server CPU per delivery (issue 12's figure): N raw SSE subscribers on one topic, M events
POSTed one at a time at R/s (or max), user+system CPU of the server process over the publish
phase divided by the deliveries. SRC is the src/ directory of the pushsvc to run, so two trees
compare in one session:

    python bench/fanout_cpu.py /path/to/old/src 500 200 50
    python bench/fanout_cpu.py src 500 200 50
"""
# ruff: noqa
import os, socket, selectors, sys, time, json, http.client
from pushsvc.testing.live import PushsvcProcess
from pushsvc.testing.procfs import cpu_seconds

src, n, m, rate = os.path.abspath(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
proc = PushsvcProcess("serve", "--tick", "0", env={"PYTHONPATH": src, "PUSHSVC_MAX_STREAMS_PER_IP": "100000"}).start()
sel = selectors.DefaultSelector(); socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", proc.port))
    s.sendall(b"GET /topics/ab/stream HTTP/1.1\r\nHost: x\r\n\r\n"); s.setblocking(False)
    sel.register(s, selectors.EVENT_READ); socks.append(s)
counts = {s.fileno(): 0 for s in socks}
def pump(t):
    for key, _ in sel.select(t):
        try: data = key.fileobj.recv(1 << 20)
        except BlockingIOError: continue
        counts[key.fileobj.fileno()] += data.count(b"event: stats")
end = time.time() + 3
while time.time() < end: pump(0.05)
conn = http.client.HTTPConnection("127.0.0.1", proc.port)
cpu0 = cpu_seconds(proc.pid); t0 = time.time()
interval = 0 if rate == "max" else 1 / float(rate)
lat = []
for k in range(m):
    conn.request("POST", "/topics/ab/events", json.dumps({"value": k}), {"Content-Type": "application/json"})
    conn.getresponse().read()
    due = t0 + (k + 1) * interval
    while True:
        pump(max(0, min(0.01, due - time.time())))
        if time.time() >= due: break
deadline = time.time() + 30
while sum(counts.values()) < n * m and time.time() < deadline: pump(0.05)
cpu1 = cpu_seconds(proc.pid); wall = time.time() - t0
got = sum(counts.values())
print(f"{src} N={n} R={rate}: delivered {got}/{n*m}, server CPU/delivery {1e6*(cpu1-cpu0)/got:.1f} us, {got/wall:.0f} deliv/s")
proc.stop()
