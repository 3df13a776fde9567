#!/usr/bin/env python3
"""Drives the web console of a running `yoloswap serve` in headless Chromium (Debian's chromium and chromedriver,
through Selenium; nothing is downloaded) and checks what an operator and a viewer see.

One browser session, all checks in it, in this order:
  page        the console loads, signs in with the operator token, shows every slot, the stream goes live, and the
              browser logs no error (the only network errors allowed are 404s of the optional panels' endpoints,
              /v1/slots/{slot}/release and /v1/streams, which other branches add)
  detect      a photo chosen in "Try an image" is drawn with the same boxes as POST /v1/detect answers for it
  timeline    a switch made through the API (not the page) appears in the swap timeline within 5 s (nothing polls the
              timeline: only the event stream can bring it), without a reload
  operator    through the page: a model from the repository list loaded and staged (its load stages shown as they
              pass), the staged model discarded, the slot rolled back
  releases    a shadow release of --load-model started through the API appears as a card without a reload, its
              baseline row counting the 4 requests sent and its agreement line every copy for the candidate
              (compared, or shed by the mirror's full queue) and as many pairs as the API; the card's buttons pause,
              resume and promote it, each click's answer reported (the release's history has the three steps in
              order, the slot's active model is then the candidate, the buttons disabled)
  streams     through the page: a stream of --stream-source started from the Streams form under a name (its id then),
              its annotated preview
              shown (JPEG parts of the video's size decoded by the browser, frame numbers rising), its row showing
              the active model, then stopped with the row's button: the row and the preview go, the API answers 404
  viewer      signed in with a viewer token, every operator control is disabled (the Streams form's too)
  bad_token   a wrong token is refused with a clear message, and nothing is stored

Prints one JSON object: {"checks": {name: {"ok": bool, "detail": str}}, "figures": {...}, "screenshots": [...]}; exits
0 when every check passed, 1 otherwise. Screenshots go to --out.
"""
import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request

os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not fetch a browser or a driver

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def api(base, method, path, token=None, body=None, content_type=None):
    headers = {}
    if token:
        headers["Authorization"] = "Bearer " + token
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers["Content-Type"] = content_type or "application/json"
    request = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


class Run:
    def __init__(self, args):
        self.args = args
        self.checks = {}
        self.figures = {}
        self.screenshots = []
        options = webdriver.ChromeOptions()
        options.binary_location = args.chromium
        for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,1500", "--no-first-run", "--disable-extensions",
                     "--disable-background-networking", "--disable-component-update"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(executable_path=args.chromedriver), options=options)
        self.driver.set_page_load_timeout(60)

    def check(self, name, ok, detail=""):
        self.checks[name] = {"ok": bool(ok), "detail": detail}

    def shot(self, name):
        path = os.path.join(self.args.out, name + ".png")
        self.driver.save_screenshot(path)
        self.screenshots.append(path)

    def wait(self, condition, timeout=30, what=""):
        """Polls `condition` until it is truthy; a timeout names `what` was awaited."""
        message = f"{what} (not within {timeout} s)" if what else ""
        return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(condition, message)

    def browser_errors(self, allowed=()):
        """Log entries at SEVERE (errors), less the network errors of `allowed` URL fragments."""
        errors = []
        for entry in self.driver.get_log("browser"):
            if entry["level"] != "SEVERE":
                continue
            message = entry["message"]
            if entry.get("source") == "network" and any(fragment in message for fragment in allowed):
                continue
            errors.append(message)
        return errors

    def sign_in(self, token):
        driver = self.driver
        if driver.find_element(By.ID, "sign-out-button").is_displayed():
            driver.find_element(By.ID, "sign-out-button").click()
        field = driver.find_element(By.ID, "token")
        field.clear()
        field.send_keys(token)
        driver.find_element(By.ID, "sign-in-button").click()

    def slot_names(self):
        return sorted(e.get_attribute("data-slot") for e in self.driver.find_elements(By.CSS_SELECTOR, "article.slot"))

    # MARK: Checks

    def page(self):
        args, driver = self.args, self.driver
        driver.get(args.base + "/")
        self.wait(lambda d: d.execute_script("return document.readyState") == "complete")
        self.sign_in(args.operator_token)
        expected = sorted(s["name"] for s in api(args.base, "GET", "/v1/slots", args.operator_token)[1]["slots"])
        self.wait(lambda d: self.slot_names() == expected
                  and d.find_element(By.ID, "stream-state").text == "live"
                  and d.find_element(By.ID, "audit-state").get_attribute("data-state") == "intact")
        # The active model's row carries its sha256 as the API reports it.
        active = api(args.base, "GET", "/v1/slots/" + expected[0], args.operator_token)[1]["active"]
        row = driver.find_element(By.CSS_SELECTOR,
                                  f'article.slot[data-slot="{expected[0]}"] tr[data-role="active"]')
        # The optional panels' endpoints have been asked (their 404s, if any, are in the log by now).
        self.wait(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-optional-panels") == "probed")
        errors = self.browser_errors(allowed=("/release ", "/v1/streams "))
        self.shot("console-operator")
        self.check("page", not errors and row.get_attribute("data-sha256") == active["sha256"]
                   and active["sha256"][:12] in row.text,
                   f"slots {expected}; browser errors: {errors}")

    def detect(self):
        args, driver = self.args, self.driver
        with open(args.image, "rb") as f:
            jpeg = f.read()
        status, reference = api(args.base, "POST", "/v1/detect?conf=0.25", args.operator_token, jpeg, "image/jpeg")
        driver.find_element(By.ID, "image-input").send_keys(os.path.abspath(args.image))
        rows = self.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#try-detections tbody tr")
                         if d.find_element(By.ID, "try-stamp").text.startswith(reference["model"]["slot"]) else None)
        shown = [{"class_id": int(r.get_attribute("data-class-id")),
                  "box": [float(r.get_attribute("data-" + k)) for k in ("x1", "y1", "x2", "y2")]} for r in rows]
        wanted = [{"class_id": d["class_id"], "box": [d["box"][k] for k in ("x1", "y1", "x2", "y2")]}
                  for d in reference["detections"]]
        same = len(shown) == len(wanted) and all(
            a["class_id"] == b["class_id"] and all(abs(x - y) < 1e-6 for x, y in zip(a["box"], b["box"]))
            for a, b in zip(shown, wanted))
        stamp = driver.find_element(By.ID, "try-stamp").text
        canvas = driver.execute_script("const c = document.getElementById('try-canvas'); return [c.width, c.height];")
        self.figures["detections"] = len(shown)
        self.shot("console-detect")
        self.check("detect", status == 200 and same and len(wanted) > 0
                   and reference["model"]["sha256"][:12] in stamp
                   and canvas == [reference["image"]["width"], reference["image"]["height"]],
                   f"{len(shown)} boxes shown, {len(wanted)} from /v1/detect; stamp '{stamp}'; canvas {canvas}")

    def timeline(self):
        args, driver = self.args, self.driver
        slot = self.slot_names()[0]
        driver.execute_script("window.__notReloaded = true;")
        # Stage a model through the API, wait for the page to show its load, then switch through the API.
        status, op = api(args.base, "POST", f"/v1/slots/{slot}/load?wait=true", args.operator_token,
                         {"model": args.switch_model})
        if status != 200:
            self.check("timeline", False, f"staging {args.switch_model} failed: {status} {op}")
            return
        self.wait(lambda d: d.find_elements(By.CSS_SELECTOR,
                                            f'#timeline li[data-slot="{slot}"][data-operation="load"]'))
        before = len(driver.find_elements(By.CSS_SELECTOR, '#timeline li[data-operation="switch"]'))
        status, event = api(args.base, "POST", f"/v1/slots/{slot}/switch", args.operator_token)
        switched = time.monotonic()
        try:
            self.wait(lambda d: len(d.find_elements(By.CSS_SELECTOR, '#timeline li[data-operation="switch"]'))
                      > before, timeout=60)
            seconds = time.monotonic() - switched
        except Exception:
            seconds = None
        item = driver.find_elements(By.CSS_SELECTOR, '#timeline li[data-operation="switch"]')
        text = item[0].text if item else ""
        not_reloaded = driver.execute_script("return window.__notReloaded === true;")
        # The slot card follows: the new generation shows without a reload.
        self.wait(lambda d: f"generation {event['generation']}" in d.find_element(
            By.CSS_SELECTOR, f'article.slot[data-slot="{slot}"] .generation').text)
        self.figures["timeline_seconds"] = None if seconds is None else round(seconds, 3)
        self.shot("console-timeline")
        self.check("timeline", status == 200 and seconds is not None and not_reloaded
                   and event["to"]["id"] in text,
                   f"shown after {seconds} s: '{text}'")

    def operator(self):
        args, driver = self.args, self.driver
        slot = self.slot_names()[0]
        card = f'article.slot[data-slot="{slot}"]'
        find = lambda css: driver.find_element(By.CSS_SELECTOR, card + " " + css)  # noqa: E731
        before = api(args.base, "GET", "/v1/slots/" + slot, args.operator_token)[1]
        # The list is re-filled as the repository is re-read: choose by value, as a person picking from it does.
        self.wait(lambda d: d.execute_script(
            "const s = document.querySelector(arguments[0]); s.value = arguments[1]; return s.value === arguments[1];",
            card + " .load-model", args.load_model))
        if find(".load-activate").is_selected():
            find(".load-activate").click()
        find(".load-button").click()
        # The stages as the page shows them, sampled until the load ends.
        seen = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            current = driver.execute_script(
                "const li = document.querySelector(arguments[0] + ' .stages li[data-state=\"current\"]');"
                "return li ? li.dataset.stage : null;", card)
            if current and (not seen or seen[-1] != current):
                seen.append(current)
            staged = driver.find_elements(By.CSS_SELECTOR, card + ' tr[data-role="staged"][data-sha256]')
            if staged and not find(".load-button").get_attribute("disabled"):
                break
            time.sleep(0.05)
        stages = driver.execute_script("return Array.from(document.querySelectorAll(arguments[0] + ' .stages li'))"
                                       ".map((li) => li.dataset.state);", card)
        staged = api(args.base, "GET", "/v1/slots/" + slot, args.operator_token)[1].get("staged") or {}
        loaded = staged.get("path") == args.load_model and stages and all(s == "done" for s in stages)
        self.shot("console-load")
        # Discard it, then roll back to the standby, with the page's buttons.
        self.wait(lambda d: find(".discard").is_enabled())
        find(".discard").click()
        self.wait(lambda d: d.find_elements(By.CSS_SELECTOR, card + ' tr[data-role="staged"]:not([data-sha256])'))
        self.wait(lambda d: find(".rollback").is_enabled())
        find(".rollback").click()
        standby_sha = before["standby"]["sha256"]
        self.wait(lambda d: d.find_elements(By.CSS_SELECTOR,
                                            card + f' tr[data-role="active"][data-sha256="{standby_sha}"]'))
        after = api(args.base, "GET", "/v1/slots/" + slot, args.operator_token)[1]
        self.figures["load_stages_seen"] = seen
        self.check("operator", loaded and after["active"]["sha256"] == standby_sha and "staged" not in after,
                   f"stages seen {seen}, final {stages}; staged {staged.get('path')}; active after rollback "
                   f"{after['active']['id']}")

    def releases(self):
        """A shadow release started through the API appears as a card; its figures fill as requests come; the
        card's buttons pause, resume and promote it."""
        args, driver = self.args, self.driver
        slot = self.slot_names()[0]
        card = f'article.release[data-slot="{slot}"]'
        find = lambda css: driver.find_element(By.CSS_SELECTOR, card + " " + css)  # noqa: E731
        started, release = api(args.base, "POST", f"/v1/slots/{slot}/release?wait=true", args.operator_token,
                               {"model": args.load_model, "strategy": "shadow"})
        if started != 200:
            raise RuntimeError(f"the release did not start: {started} {release}")
        # No reload: the release's event makes the page look (or its 10 s probe does).
        self.wait(lambda d: d.find_elements(By.CSS_SELECTOR, card + '[data-phase="running"]'), 60,
                  "the release's card, running")
        with open(args.image, "rb") as f:
            image = f.read()
        answered = [api(args.base, "POST", "/v1/detect", args.operator_token, image, "image/jpeg")[0]
                    for _ in range(4)]
        # Refreshed every 2 s: the baseline's row counts the requests, and each of the 4 copies for the candidate is
        # accounted for — compared, or shed when the mirror's queue was full (the candidate, yolov3-tiny 608, runs
        # slower than the requests come), or failed.
        self.wait(lambda d: d.find_elements(By.CSS_SELECTOR, card + ' tr[data-variant="baseline"][data-requests="4"]')
                  and d.find_elements(By.CSS_SELECTOR, card + ' .release-agreement[data-mirror-accounted="4"]'), 120,
                  "4 requests and 4 mirror copies accounted for on the card")
        pairs = api(args.base, "GET", f"/v1/slots/{slot}/release", args.operator_token)[1]["agreement"]["pairs"]
        self.wait(lambda d: find(".release-agreement").get_attribute("data-pairs") == str(pairs), 10,
                  f"the card's agreement over the API's {pairs} pairs")
        agreement = find(".release-agreement").text
        steps = []
        for button, phase, said in ((".release-toggle", "paused", "paused"), (".release-toggle", "running", "resumed"),
                                    (".release-promote", "promoted", "promoted")):
            self.wait(lambda d: find(button).is_enabled(), 60, f"{button} enabled")
            find(button).click()
            self.wait(lambda d: d.find_elements(By.CSS_SELECTOR, card + f'[data-phase="{phase}"]'), 60,
                      f"the card {phase} after {button}")
            # The action's own answer, not a refresh, says what happened.
            message = self.wait(lambda d: d.find_element(By.ID, "message").text
                                if f"Release on {slot} {said}." in d.find_element(By.ID, "message").text
                                else None, 60, f"the message 'Release on {slot} {said}.'")
            steps.append((phase, message))
        after = api(args.base, "GET", "/v1/slots/" + slot, args.operator_token)[1]
        status = api(args.base, "GET", f"/v1/slots/{slot}/release", args.operator_token)[1]
        actions = [t["action"] for t in status.get("history", [])]
        in_order = [a for a in actions if a in ("pause", "resume", "promote")] == ["pause", "resume", "promote"]
        buttons = [find(b).is_enabled() for b in (".release-toggle", ".release-promote", ".release-abort")]
        self.shot("console-releases")
        self.figures["release_steps"] = [phase for phase, _ in steps]
        mirror = status["mirror"]
        self.check("releases", answered == [200] * 4 and status["phase"] == "promoted"
                   and status["agreement"]["pairs"] == pairs == mirror["mirrored"] >= 1 and in_order
                   and after["active"]["sha256"] == (status.get("candidate") or {}).get("sha256")
                   and not any(buttons),
                   f"detect {answered}, '{agreement}', mirror {mirror}, steps {steps}, history {actions}, "
                   f"final {status['phase']}, "
                   f"active {after['active']['id']}, buttons enabled after {buttons}")

    def streams(self):
        args, driver = self.args, self.driver
        self.wait(lambda d: d.find_element(By.ID, "streams-panel").is_displayed())
        before = {r.get_attribute("data-stream") for r in driver.find_elements(By.CSS_SELECTOR, "#streams tr[data-stream]")}
        # Named from the form: the stream's id is the name.
        name = f"console-{int(time.time() * 1000) % 100000}"
        for field, value in (("stream-source", args.stream_source), ("stream-fps", str(args.stream_fps)),
                             ("stream-name", name)):
            driver.find_element(By.ID, field).clear()
            driver.find_element(By.ID, field).send_keys(value)
        driver.find_element(By.ID, "stream-start-button").click()
        # The new stream's row (not one that was there before).
        row = self.wait(lambda d: next((r for r in d.find_elements(By.CSS_SELECTOR, "#streams tr[data-stream]")
                                        if r.get_attribute("data-stream") not in before), None))
        stream_id = row.get_attribute("data-stream")
        # The preview as the browser decoded it: [frame, width, height] each time the shown frame changes.
        seen = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(seen) < 3:
            shown = driver.execute_script(
                "const i = document.getElementById('stream-preview');"
                "return i.complete && i.naturalWidth > 0 && i.dataset.frame !== undefined"
                "  ? [Number(i.dataset.frame), i.naturalWidth, i.naturalHeight] : null;")
            if shown and (not seen or shown[0] != seen[-1][0]):
                seen.append(shown)
            time.sleep(0.05)
        # The row follows the stream (the panel refreshes every 2 s): the model answering is the slot's active one.
        slot = api(args.base, "GET", "/v1/slots/" + row.find_elements(By.TAG_NAME, "td")[2].text,
                   args.operator_token)[1]
        try:
            self.wait(lambda d: slot["active"]["sha256"][:12] in row.find_elements(By.TAG_NAME, "td")[5].text,
                      timeout=10)
        except Exception:
            pass  # judged below, with what the cell shows
        model_cell = row.find_elements(By.TAG_NAME, "td")[5].text
        self.shot("console-streams")
        detected = api(args.base, "GET", f"/v1/streams/{stream_id}", args.operator_token)[1].get("frames_detected")
        row.find_element(By.CSS_SELECTOR, ".stream-stop").click()
        self.wait(lambda d: not d.find_elements(By.CSS_SELECTOR, f'#streams tr[data-stream="{stream_id}"]'))
        # The row can go before the DELETE's answer comes (the panel's 2 s refresh no longer lists a stream being
        # stopped); the message follows that answer.
        try:
            self.wait(lambda d: f"Stream {stream_id} stopped" in d.find_element(By.ID, "message").text, timeout=15)
        except Exception:
            pass  # judged below, with the message shown
        status, _ = api(args.base, "GET", f"/v1/streams/{stream_id}", args.operator_token)
        message = driver.find_element(By.ID, "message").text
        preview_closed = not driver.find_element(By.ID, "stream-preview-figure").is_displayed()
        width, height = (int(v) for v in args.stream_size.split("x"))
        frames = [f for f, _, _ in seen]
        self.figures["stream_preview_frames"] = frames
        self.check("streams", stream_id == name and len(seen) >= 3 and frames == sorted(frames)
                   and frames[-1] < (detected or 0)
                   and all(w == width and h == height for _, w, h in seen)
                   and slot["active"]["sha256"][:12] in model_cell and status == 404 and preview_closed
                   and f"Stream {stream_id} stopped" in message,
                   f"stream {stream_id} (named {name}); preview {seen}, {detected} frames detected then; model cell '{model_cell}'; after Stop: "
                   f"GET {status}, preview closed {preview_closed}, message '{message}'")

    def viewer(self):
        args, driver = self.args, self.driver
        self.sign_in(args.viewer_token)
        self.wait(lambda d: "(viewer)" in d.find_element(By.ID, "who").text and self.slot_names())
        self.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "article.slot .load-model option"))
        controls = driver.find_elements(By.CSS_SELECTOR, ".op-control")
        enabled = [c.get_attribute("class") for c in controls if c.is_enabled()]
        self.figures["viewer_controls"] = len(controls)
        self.shot("console-viewer")
        self.check("viewer", controls and not enabled,
                   f"{len(controls)} controls, enabled: {enabled}")

    def bad_token(self):
        driver = self.driver
        self.sign_in("not-a-valid-token")
        message = self.wait(lambda d: d.find_element(By.ID, "message") if d.find_element(
            By.ID, "message").is_displayed() and d.find_element(By.ID, "message").get_attribute("data-kind") == "error"
            else None)
        text = message.text
        stored = driver.execute_script("return sessionStorage.getItem('yoloswap.token');")
        errors = self.browser_errors(allowed=("/v1/whoami ", "/release ", "/v1/streams "))
        self.shot("console-bad-token")
        self.check("bad_token", "not accepted" in text and stored is None and not driver.find_elements(
            By.CSS_SELECTOR, "article.slot") and not errors,
            f"message '{text}', stored {stored!r}, other browser errors {errors}")

    def run(self):
        for step in (self.page, self.detect, self.timeline, self.operator, self.releases, self.streams,
                     self.viewer, self.bad_token):
            try:
                step()
            except Exception as error:  # a step that cannot finish fails; the others still run
                self.check(step.__name__, False, f"{type(error).__name__}: {error}")
                try:
                    self.shot("failed-" + step.__name__)
                except Exception:
                    pass
        self.driver.quit()
        return all(c["ok"] for c in self.checks.values())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the service, e.g. http://127.0.0.1:8080")
    parser.add_argument("--operator-token", required=True)
    parser.add_argument("--viewer-token", required=True)
    parser.add_argument("--image", required=True, help="a photo for 'Try an image'")
    parser.add_argument("--switch-model", required=True, help="a repository model to stage and switch to")
    parser.add_argument("--load-model", required=True, help="a repository model to load through the page")
    parser.add_argument("--stream-source", required=True, help="a video in the service's streams.media_dir")
    parser.add_argument("--stream-size", required=True, help="its frame size, WIDTHxHEIGHT")
    parser.add_argument("--stream-fps", type=float, default=5, help="the stream's fps_cap (long enough to watch)")
    parser.add_argument("--out", required=True, help="folder for the screenshots")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    run = Run(args)
    ok = run.run()
    print(json.dumps({"checks": run.checks, "figures": run.figures, "screenshots": run.screenshots}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
