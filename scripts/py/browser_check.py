"""Drives the creator dashboard in headless Chromium over the DevTools
protocol, as a creator would: open the page, give it the token (session
storage, never a URL), wait for the videos and the live total, and check
every number the page shows against the API's answer. Optionally saves a
screenshot. Usage:

    browser_check.py BASE_URL CREATOR_ID TOKEN [--screenshot PNG]

Exits non-zero naming the first number that differs.
"""

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket  # websocket-client


def api(base, path, token):
    req = urllib.request.Request(base + path, headers={"Authorization": "Bearer " + token})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Tab:
    def __init__(self, ws_url):
        self.ws = websocket.create_connection(ws_url, timeout=30)
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        me = self.next_id
        self.ws.send(json.dumps({"id": me, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == me:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def eval(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"page script failed: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, expr, what, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.eval(expr):
                return
            time.sleep(0.25)
        raise SystemExit(f"browser check: the page never showed {what} within {timeout} s")


def main():
    args = sys.argv[1:]
    shot = None
    if "--screenshot" in args:
        i = args.index("--screenshot")
        shot = args[i + 1]
        del args[i : i + 2]
    base, creator, token = args
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not chromium:
        raise SystemExit("browser check: no chromium; install it with `apt-get install -y chromium`")
    port = free_port()
    profile = tempfile.mkdtemp(prefix="vc-chromium-")
    proc = subprocess.Popen(
        [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--remote-debugging-port={port}", f"--user-data-dir={profile}",
         "--window-size=1400,900", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        targets = None
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                    targets = [t for t in json.load(r) if t.get("type") == "page"]
                if targets:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        if not targets:
            raise SystemExit("browser check: chromium did not start its DevTools endpoint")
        tab = Tab(targets[0]["webSocketDebuggerUrl"])
        tab.call("Page.enable")
        tab.call("Network.enable")
        tab.call("Page.navigate", url=base + "/")
        tab.wait_for("document.readyState === 'complete' && !!document.getElementById('login')", "the page")
        tab.wait_for("!document.getElementById('login').hidden", "the sign-in form")
        # The creator signs in: the token goes into the form, never a URL.
        tab.eval(f"document.getElementById('token').value = {json.dumps(token)};"
                 "document.querySelector('#login button').click(); true")
        tab.wait_for("document.querySelectorAll('tr.video').length > 0", "the video list")
        tab.wait_for("!!document.getElementById('live-total').dataset.value", "the live total")
        tab.wait_for("!!document.querySelector('#chart canvas')", "the chart")
        time.sleep(1.0)
        shown = tab.eval("""[...document.querySelectorAll('tr.video')].map(tr => ({
            video: tr.dataset.video,
            views: Number(tr.querySelector('[data-field=views]').dataset.value),
            billable: Number(tr.querySelector('[data-field=billable_views]').dataset.value),
            removed: Number(tr.querySelector('[data-field=fraud_filtered]').dataset.value),
            why: tr.querySelector('[data-field=fraud_filtered]').title,
            reasons: (tr.querySelector('[data-field=fraud_filtered] .reasons') || {}).textContent || '',
            text: tr.querySelector('[data-field=views]').textContent }))""")
        live = tab.eval("({video: document.getElementById('live-total').dataset.video,"
                        " views: Number(document.getElementById('live-total').dataset.value)})")
        listing = api(base, f"/v1/creators/{creator}/views?limit=100", token)
        want = {r["video_id"]: r for r in listing["rows"]}
        if [s["video"] for s in shown] != [r["video_id"] for r in listing["rows"]]:
            raise SystemExit(f"browser check: the page lists {[s['video'] for s in shown]}, the API {list(want)}")
        for s in shown:
            r = want[s["video"]]
            if (s["views"], s["billable"], s["removed"]) != (r["views"], r["billable_views"], r["fraud_filtered"]):
                raise SystemExit(f"browser check: {s['video']}: the page shows {s}, the API {r}")
            # Where views were removed, the page shows every reason code
            # with its views, under the number and in the tooltip.
            for rule, n in r["filtered_by_rule"].items():
                said = f"{rule.replace('_', ' ')} {n:,}"
                if said not in s["why"]:
                    raise SystemExit(f"browser check: {s['video']}: the Removed tooltip {s['why']!r} misses {said!r}")
                if said not in s["reasons"]:
                    raise SystemExit(f"browser check: {s['video']}: the reasons shown {s['reasons']!r} miss {said!r}")
            if s["text"].replace(",", "") != str(r["views"]):
                raise SystemExit(f"browser check: {s['video']}: the page prints {s['text']!r}, the API {r['views']}")
        total = api(base, f"/v1/videos/{live['video']}/views", token)
        if live["views"] != total["views"]:
            raise SystemExit(f"browser check: live total of {live['video']} is {live['views']}, the API {total['views']}")
        # Nothing the page asked for carried the token in its URL.
        urls = tab.eval("performance.getEntriesByType('resource').map(e => e.name)")
        if any(token in u for u in urls):
            raise SystemExit("browser check: a request URL carried the token")
        if shot:
            png = tab.call("Page.captureScreenshot", format="png")["data"]
            os.makedirs(os.path.dirname(os.path.abspath(shot)), exist_ok=True)
            with open(shot, "wb") as f:
                f.write(base64.b64decode(png))
        print(f"browser check: the dashboard shows {len(shown)} videos and the live total of "
              f"{live['video']} ({live['views']} views), each equal to the API's answer")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
