#!/usr/bin/env python3
"""Drives luci-app-socksbalance in LuCI with headless Chromium (selenium,
Debian's chromium-driver), as a router owner would. Run inside the
router's network namespace (scripts/openwrt-test.sh: `owrt net ROOT`),
with the packages installed and the daemon on its packaged YAML.

    scripts/luci_test.py --backend NAME=ADDR --backend NAME=ADDR --dead NAME=ADDR
        --echo ADDR [--luci URL] [--shots DIR]

Checks, in order, printing "ok   luci: ..." for each:
- log in (root, the empty password of a fresh router);
- Services -> socksbalance is in the menu and opens;
- switch to these settings (source uci), add the backends and the dead
  one; Save & Apply; the daemon runs with those backends (/api/stats);
- the status page shows them up and the dead one down, with its reason;
- with tunnels open through the daemon, disable a backend in the grid;
  Save & Apply: it is gone, and every open tunnel still echoes;
- an invalid address is refused by the form before saving;
- after a reload the values are still there;
- screenshots of settings and status at desktop and phone width (--shots).
Talks to the router (192.168.1.1, 127.0.0.1) only; every wait is bounded.
"""

import argparse
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

STATS = "http://127.0.0.1:8080/api/stats"
step = ""


def fail(why):
    raise SystemExit(f"FAIL luci: {step}: {why}")


def ok():
    print(f"ok   luci: {step}", flush=True)


def until(what, cond, timeout=30):
    end = time.time() + timeout
    last = None
    while time.time() < end:
        try:
            got = cond()
            if got:
                return got
        except (WebDriverException, OSError, ValueError, KeyError) as e:
            last = e
        time.sleep(0.2)
    fail(f"timed out waiting for {what}" + (f" ({last})" if last else ""))


def stats():
    with urllib.request.urlopen(STATS, timeout=5) as r:
        return json.load(r)


def names_in_stats():
    return [b["name"] for b in stats()["backends"]]


def tunnel(echo):
    """A SOCKS5 tunnel through the daemon (127.0.0.1:1080) to the echo server."""
    host, port = echo.rsplit(":", 1)
    s = socket.create_connection(("127.0.0.1", 1080), timeout=10)
    s.sendall(b"\x05\x01\x00")
    if s.recv(2) != b"\x05\x00":
        fail("the daemon refused the SOCKS5 greeting")
    s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(host) + int(port).to_bytes(2, "big"))
    reply = b""
    while len(reply) < 10:
        chunk = s.recv(10 - len(reply))
        if not chunk:
            fail("the daemon closed the tunnel during CONNECT")
        reply += chunk
    if reply[1] != 0:
        fail(f"CONNECT failed with reply {reply[1]}")
    return s


def echoes(s, n):
    msg = f"still here {n}\n".encode()
    s.sendall(msg)
    got = b""
    while len(got) < len(msg):
        chunk = s.recv(len(msg) - len(got))
        if not chunk:
            return False
        got += chunk
    return got == msg


class Luci:
    def __init__(self, base, width=1280):
        o = webdriver.ChromeOptions()
        o.binary_location = "/usr/bin/chromium"
        self.profile = tempfile.mkdtemp(prefix="sb-luci-profile-")
        profile = self.profile
        for a in ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  f"--user-data-dir={profile}", "--hide-scrollbars", f"--window-size={width},1000"]:
            o.add_argument(a)
        self.d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)
        self.d.set_page_load_timeout(30)
        self.width = width
        if width < 500:
            # A phone: a device this wide (headless windows are at least
            # 500 px), so the theme's mobile styles apply.
            self.d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                   {"width": width, "height": 844, "deviceScaleFactor": 1, "mobile": True})
        self.base = base

    def quit(self):
        self.d.quit()
        shutil.rmtree(self.profile, ignore_errors=True)

    def css(self, sel):
        return self.d.find_elements(By.CSS_SELECTOR, sel)

    def one(self, what, sel, timeout=20):
        return until(what, lambda: next(iter(e for e in self.css(sel) if e.is_displayed()), None), timeout)

    def open(self, path, ready):
        self.d.get(self.base + path)
        self.one(f"{path} to render", ready)

    def login(self):
        self.d.get(self.base + "/")
        self.one("the login form", "#luci_password")
        self.d.find_element(By.ID, "luci_password").send_keys("")
        self.one("the log-in button", ".modal.login .cbi-button-positive, button.cbi-button-positive").click()
        until("the menu after logging in", lambda: any("Log out" in e.text for e in self.css("a")))

    def option(self, sid, name):
        return f'[id="widget.cbid.socksbalance.{sid}.{name}"]'

    def save_apply(self):
        self.click("Save & Apply", ".cbi-page-actions .cbi-button-apply")

    def add_backend(self, name, address):
        self.one("the backends' Add button", "#cbi-socksbalance-backend .cbi-button-add").click()
        modal = self.one("the backend form", ".modal")
        self.one("the name field", '.modal input[id$=".name"]').send_keys(name)
        field = self.one("the address field", '.modal input[id$=".address"]')
        field.send_keys(address)
        return modal, field

    def click(self, what, sel):
        # Through the DOM: a field's dependencies can hide other fields as
        # it is typed into, and a click by coordinates then misses.
        self.d.execute_script("arguments[0].click()", self.one(what, sel))

    def modal_save(self):
        self.click("the form's Save button", ".modal .cbi-button-positive")

    def shot(self, path):
        # The whole page, not the window: size the window to the document.
        h = min(max(self.d.execute_script("return document.documentElement.scrollHeight"), 600), 4000)
        if self.width < 500:
            self.d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                   {"width": self.width, "height": h, "deviceScaleFactor": 1, "mobile": True})
        else:
            self.d.set_window_size(self.width, h)
        time.sleep(0.3)
        self.d.save_screenshot(path)


def main():
    global step
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--luci", default="http://192.168.1.1/cgi-bin/luci")
    ap.add_argument("--backend", action="append", default=[])
    ap.add_argument("--dead", required=True)
    ap.add_argument("--echo", required=True)
    ap.add_argument("--shots")
    a = ap.parse_args()
    good = [b.split("=", 1) for b in a.backend]
    dead = a.dead.split("=", 1)

    ui = Luci(a.luci)
    try:
        step = "log in as root"
        ui.login()
        ok()

        step = "Services -> socksbalance"
        link = until("the menu entry", lambda: next(iter(e for e in ui.css('a[href*="admin/services/socksbalance"]')), None))
        ui.open("/admin/services/socksbalance/settings", '[id="widget.cbid.socksbalance.main.source"]')
        if not link:
            fail("no menu entry")
        ok()

        step = "these settings, two backends and a dead one, Save & Apply"
        for name, address in good + [dead]:
            ui.add_backend(name, address)
            ui.modal_save()
            until(f"the form for {name} to close", lambda: not any(e.is_displayed() for e in ui.css(".modal")))
        # After the grid's forms: saving one re-renders the page from what
        # is staged, which drops a change made on the page before it (as
        # in every LuCI app).
        Select(ui.one("the source", ui.option("main", "source"))).select_by_value("uci")
        ui.save_apply()
        want = [n for n, _ in good] + [dead[0]]
        until("the daemon to run with the new backends", lambda: names_in_stats() == want, 60)
        ok()

        step = "the status page: backends up, the dead one down with its reason"
        ui.open("/admin/services/socksbalance/status", "#sb-backends")

        def states():
            rows = ui.css("#sb-backends tr[data-backend]")
            return {r.get_attribute("data-backend"): (r.find_element(By.CSS_SELECTOR, ".sb-state").text,
                                                      r.find_element(By.CSS_SELECTOR, ".sb-why").text) for r in rows}
        got = until("two up and one down", lambda: (lambda s: s if [v[0] for v in s.values()].count("up") == len(good)
                                                    and s.get(dead[0], ("",))[0] == "down" else None)(states()), 60)
        if "connection refused" not in got[dead[0]][1]:
            fail(f"the dead backend's reason is {got[dead[0]][1]!r}")
        ok()
        if a.shots:
            ui.shot(os.path.join(a.shots, "luci-status.png"))

        step = "disable a backend in the grid, Save & Apply: gone, open tunnels unbroken"
        tunnels = [tunnel(a.echo) for _ in range(6)]
        for i, t in enumerate(tunnels):
            if not echoes(t, i):
                fail("a tunnel did not echo before the change")
        ui.open("/admin/services/socksbalance/settings", "#cbi-socksbalance-backend")
        off = good[-1][0]
        row = until(f"the row of {off}", lambda: next(iter(r for r in ui.css("#cbi-socksbalance-backend tr.cbi-section-table-row")
                                                           if off in r.text), None))
        box = row.find_element(By.CSS_SELECTOR, 'input[type="checkbox"]')
        if not box.is_selected():
            fail(f"{off} is not enabled to begin with")
        box.click()
        ui.save_apply()
        until(f"{off} to leave the daemon", lambda: off not in names_in_stats(), 60)
        for i, t in enumerate(tunnels):
            if not echoes(t, 100 + i):
                fail(f"tunnel {i} broke when {off} was disabled")
            t.close()
        ok()

        step = "an invalid address is refused before saving"
        ui.open("/admin/services/socksbalance/settings", "#cbi-socksbalance-backend")
        before = len(ui.css("#cbi-socksbalance-backend tr.cbi-section-table-row"))
        modal, field = ui.add_backend("typo", "127.0.0.1:99999")
        until("the field to be marked invalid", lambda: "cbi-input-invalid" in (field.get_attribute("class") or ""))
        ui.modal_save()
        time.sleep(1)  # a refused save leaves the form open: nothing to wait for
        if not any(e.is_displayed() for e in ui.css(".modal")):
            fail("the form closed with an invalid address")
        ui.click("the Dismiss button", ".modal .cbi-button:not(.cbi-button-positive)")
        ui.open("/admin/services/socksbalance/settings", "#cbi-socksbalance-backend")
        after = len(ui.css("#cbi-socksbalance-backend tr.cbi-section-table-row"))
        if after != before:
            fail(f"{after - before} row(s) added by an invalid form")
        ok()

        step = "after a reload the values persist"
        ui.d.refresh()
        ui.one("the settings", ui.option("main", "source"))
        if Select(ui.one("the source", ui.option("main", "source"))).first_selected_option.get_attribute("value") != "uci":
            fail("the source is not uci any more")
        rows = ui.css("#cbi-socksbalance-backend tr.cbi-section-table-row")
        texts = " ".join(r.text for r in rows)
        for name, _ in good + [dead]:
            if name not in texts:
                fail(f"{name} is gone from the grid")
        ok()
        if a.shots:
            ui.shot(os.path.join(a.shots, "luci-settings.png"))
    finally:
        ui.quit()

    if a.shots:
        phone = Luci(a.luci, width=390)
        try:
            phone.login()
            phone.open("/admin/services/socksbalance/status", "#sb-backends")
            phone.shot(os.path.join(a.shots, "luci-status-phone.png"))
            phone.open("/admin/services/socksbalance/settings", "#cbi-socksbalance-backend")
            phone.shot(os.path.join(a.shots, "luci-settings-phone.png"))
        finally:
            phone.quit()
    print("luci_test.py: all checks passed")


if __name__ == "__main__":
    sys.exit(main())
