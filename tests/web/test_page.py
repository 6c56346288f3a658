"""The upload page (emotionq/web/page), in headless Chromium against the real API, broker, store and worker.

The browser is Debian's ``chromium`` (scripts/system-deps installs it), driven by playwright; every check
reads what the page drew (the DOM and a screenshot's pixels) against the job the API returns.
"""

from __future__ import annotations

import base64
import os
import shutil

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Page, expect, sync_playwright

from audio_factory import distinct_clips, make_channels, make_turns
from emotionq.inference.labels import LABELS
from harness import ROOT, running

pytestmark = [pytest.mark.rabbitmq, pytest.mark.redis, pytest.mark.timeout(600)]

# The label colours of emotionq/web/page/style.css (the test reads them off the page and checks against these).
COLOURS = {"angry": "#d55e00", "disgusted": "#009e73", "fearful": "#cc79a7", "happy": "#e69f00",
           "neutral": "#7f7f7f", "other": "#56b4e9", "sad": "#0072b2", "surprised": "#f0e442",
           "unknown": "#c4c4c4"}
ORDER = ["uploading", "queued", "running", "succeeded"]
VIEWPORT = {"width": 900, "height": 1800}  # tall enough that the page never scrolls: screenshot = layout coords
# The docs' picture of the page (README and docs/index.md embed it): written by the two-channel call's test
# when EMOTIONQ_DOCS_SCREENSHOT=1, so that an ordinary test run leaves the tree as it was.
DOCS_SCREENSHOT = ROOT / "docs" / "images" / "upload-page.png"


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))


def _near(pixel, rgb, tol: int = 10) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(pixel[:3], rgb))


@pytest.fixture(scope="module")
def servers(tmp_path_factory, tiny_model_dir, amqp_url, redis_url) -> dict:
    """What both APIs share: broker, store, model and the directory of the audio (so one worker serves both)."""
    return {"model": tiny_model_dir, "broker": amqp_url, "store": redis_url,
            "var_dir": tmp_path_factory.mktemp("web-var"), "window_seconds": 30}


@pytest.fixture(scope="module")
def service(servers, tmp_path_factory):
    """The API (API keys required) and a worker."""
    with running(tmp_path_factory.mktemp("web"), **servers) as svc:
        yield svc


@pytest.fixture(scope="module")
def open_api(service, servers, tmp_path_factory):
    """A second API on the same broker and store (so the same worker) with EMOTIONQ_AUTH=disabled."""
    with running(tmp_path_factory.mktemp("web-open"), worker=False, auth="disabled", **servers) as svc:
        yield svc


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium")
    assert chromium, "chromium is not installed: run scripts/system-deps"
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    """A fresh page (empty localStorage) that records every status the job section shows."""
    context = browser.new_context(viewport=VIEWPORT)
    p = context.new_page()
    p.add_init_script("""
        window.__seen = [];
        new MutationObserver(() => {
          const s = document.getElementById("job")?.dataset.status;
          if (s && window.__seen.at(-1) !== s) window.__seen.push(s);
        }).observe(document, {subtree: true, attributes: true, attributeFilter: ["data-status"]});
    """)
    yield p
    context.close()


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory):
    """70 s of speech: with windows of at most 30 s, three of 23.3 s in the timeline."""
    from audio_factory import make_speech

    return make_speech(tmp_path_factory.mktemp("long") / "long.wav", seconds=70.0, rate=16000)


def _open(page: Page, url: str, key: str | None = None) -> None:
    page.goto(url)
    assert page.url == f"{url}/ui/"  # GET / redirects to the page
    if key is not None:
        page.get_by_label("API key").fill(key)


def _finish(page: Page, timeout_s: float = 120) -> str:
    """Waits for the page to show a finished job; returns its id (as the page shows it)."""
    page.wait_for_selector('#job[data-status="succeeded"], #job[data-status="failed"], #job[data-status="refused"]',
                           timeout=timeout_s * 1000)
    status = page.locator("#job").get_attribute("data-status")
    assert status == "succeeded", (status, page.locator("#problem").inner_text())
    seen = page.evaluate("window.__seen")
    assert seen[0] == "uploading" and seen[-1] == "succeeded", seen
    assert seen == sorted(seen, key=ORDER.index), f"statuses went backwards: {seen}"
    return page.locator("#facts dt:text-is('job') + dd").inner_text()


def _screenshot(page: Page, path) -> Image.Image:
    """The whole page as a PNG at ``path`` (kept in the test's tmp_path to look at), read back."""
    page.screenshot(path=path, full_page=True)
    with Image.open(path) as image:
        return image.convert("RGB")


def _check_bars(page: Page, job: dict, shot: Image.Image) -> None:
    """Nine bars, highest first, each as wide as its score (in the DOM and in the screenshot's pixels)."""
    scores = job["output"]["scores"]
    rows = page.locator("#bars li")
    expect(rows).to_have_count(len(LABELS))
    shown = rows.evaluate_all("rows => rows.map(r => r.dataset.label)")
    assert shown == sorted(LABELS, key=lambda label: -scores[label]), shown
    for i, label in enumerate(shown):
        row = rows.nth(i)
        assert row.locator(".pct").inner_text() == f"{scores[label] * 100:.1f}%"
        assert row.locator(".fill").evaluate("e => getComputedStyle(e).backgroundColor") == \
            "rgb({}, {}, {})".format(*_rgb(COLOURS[label]))
        track, fill = row.locator(".track").bounding_box(), row.locator(".fill").bounding_box()
        assert abs(fill["width"] - scores[label] * track["width"]) <= 1, (label, fill, track, scores[label])
        # The pixels: along the middle of the track, the label's colour covers its score's share.
        y = int(track["y"] + track["height"] / 2)
        xs = range(int(track["x"]), int(track["x"] + track["width"]))
        coloured = sum(_near(shot.getpixel((x, y)), _rgb(COLOURS[label])) for x in xs)
        assert abs(coloured - scores[label] * len(xs)) <= 2, (label, coloured, scores[label] * len(xs))
    top = job["output"]["top_label"]
    assert shown[0] == top and page.locator("#status").inner_text() == f"Succeeded: mostly {top}."


def test_upload_with_a_key_shows_the_scores_as_bars(service, page, speech_wav, tmp_path):
    key = service.create_key("web")
    [clip] = distinct_clips(speech_wav, tmp_path, 1)  # bytes no other test sent: the job really runs
    _open(page, service.url, key)
    page.get_by_label("Audio file").set_input_files(clip)
    job_id = _finish(page)
    job = httpx.get(f"{service.url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}).json()
    assert job["status"] == "succeeded" and job["input"]["filename"] == clip.name  # the key's client owns it
    assert len(job["output"]["timeline"]) == 1
    expect(page.locator("#timeline-box")).to_be_hidden()
    expect(page.locator("#untrained")).to_be_visible()  # the tiny checkpoint is untrained: the page says so
    shot = _screenshot(page, tmp_path / "short.png")
    assert shot.size == (VIEWPORT["width"], VIEWPORT["height"])  # nothing scrolled: pixels = layout coordinates
    _check_bars(page, job, shot)
    page.reload()  # the key is remembered in this browser
    expect(page.get_by_label("API key")).to_have_value(key)


def test_long_recording_shows_a_timeline_window_by_window(service, page, long_wav, tmp_path):
    key = service.create_key("web-long")
    [clip] = distinct_clips(long_wav, tmp_path, 1)
    _open(page, service.url, key)
    reads = []
    page.on("request", lambda r: "/v1/jobs/" in r.url and reads.append(r.url))
    page.get_by_label("Segments").select_option("fixed")  # windows of the whole recording, not speech segments
    page.get_by_label("Audio file").set_input_files(clip)
    job_id = _finish(page, timeout_s=240)
    assert "running" in page.evaluate("window.__seen")  # scoring 70 s takes long enough to be seen running
    assert [url.rsplit("/v1/", 1)[1] for url in reads] == [f"jobs/{job_id}/events"], reads  # pushed: no polls
    job = httpx.get(f"{service.url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}).json()
    timeline = job["output"]["timeline"]
    assert len(timeline) == 3, timeline
    shot = _screenshot(page, tmp_path / "long.png")
    _check_bars(page, job, shot)
    windows = page.locator("#timeline .window")
    expect(windows).to_have_count(len(timeline))
    strip = page.locator("#timeline").bounding_box()
    for i, w in enumerate(timeline):
        column = windows.nth(i)
        assert column.get_attribute("data-top") == w["top_label"]
        box = column.bounding_box()
        share = (w["end"] - w["start"]) / job["output"]["duration_s"]
        assert abs(box["width"] - share * strip["width"]) <= 3, (i, box, strip, share)  # 1 px gaps between
        top = column.locator(".top").bounding_box()  # the strip under each column: the top label's colour
        pixel = shot.getpixel((int(top["x"] + top["width"] / 2), int(top["y"] + top["height"] / 2)))
        assert _near(pixel, _rgb(COLOURS[w["top_label"]])), (i, pixel, w["top_label"])
        for label in LABELS:  # and the column is stacked from every label's share of the window
            part = column.locator(".stack span").nth(LABELS.index(label)).bounding_box()
            assert abs(part["height"] - w["scores"][label] * column.locator(".stack").bounding_box()["height"]) <= 1
    ticks = page.locator("#axis span").all_inner_texts()
    assert ticks[0] == "0:00" and len(ticks) >= 3, ticks  # a time axis in m:ss


def test_separate_channels_show_a_lane_each_with_its_segments_in_place(service, page, tmp_path):
    """A two-channel call: one lane per channel, each segment a box at its time and in its label's colour
    (DOM and pixels), and the channel's summary under it."""
    make_turns(tmp_path / "agent.wav", [0.4, "Hello, this is the agent speaking.", 2.5, "Thank you.", 0.5])
    make_turns(tmp_path / "customer.wav", [2.5, "I am very angry about my bill.", 3.0])
    call = make_channels(tmp_path / "call.wav", [tmp_path / "agent.wav", tmp_path / "customer.wav"])
    key = service.create_key("web-lanes")
    _open(page, service.url, key)
    page.get_by_label("Channels").select_option("separate")
    page.get_by_label("Channel names").fill("agent,customer")
    page.get_by_label("Audio file").set_input_files(call)
    job_id = _finish(page)
    job = httpx.get(f"{service.url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}).json()
    out = job["output"]
    assert [c["name"] for c in out["channels"]] == ["agent", "customer"] and len(out["segments"]) >= 3
    expect(page.locator("#lanes-box")).to_be_visible()
    expect(page.locator("#timeline-box")).to_be_hidden()
    shot = _screenshot(page, tmp_path / "lanes.png")
    lanes = page.locator("#lanes .lane")
    expect(lanes).to_have_count(2)
    for i, channel in enumerate(out["channels"]):
        lane = lanes.nth(i)
        assert lane.get_attribute("data-channel") == channel["name"] == lane.locator(".name").inner_text()
        track = lane.locator(".lane-track").bounding_box()
        mine = [s for s in out["segments"] if s["channel"] == channel["name"]]
        boxes = lane.locator(".segment")
        expect(boxes).to_have_count(len(mine))
        for k, s in enumerate(mine):
            box = boxes.nth(k)
            assert box.get_attribute("data-label") == s["label"]
            at = box.bounding_box()
            duration = out["duration_s"]
            assert abs(at["x"] - (track["x"] + s["start"] / duration * track["width"])) <= 1.5, (s, at, track)
            assert abs(at["width"] - (s["end"] - s["start"]) / duration * track["width"]) <= 1.5, (s, at, track)
            assert box.evaluate("e => getComputedStyle(e).backgroundColor") == \
                "rgb({}, {}, {})".format(*_rgb(COLOURS[s["label"]]))
            pixel = shot.getpixel((int(at["x"] + at["width"] / 2), int(at["y"] + at["height"] / 2)))
            assert _near(pixel, _rgb(COLOURS[s["label"]])), (s, pixel)
        gap = (mine[0]["start"] / 2) / out["duration_s"]  # before the first segment: the empty track
        pixel = shot.getpixel((int(track["x"] + gap * track["width"]), int(track["y"] + track["height"] / 2)))
        assert not any(_near(pixel, _rgb(c)) for c in COLOURS.values()), pixel
        summary = lane.locator(".lane-summary").inner_text()
        dominant = channel["summary"]["dominant_label"]
        assert f"mostly {dominant}" in summary and f"speech {channel['summary']['speech_s']:.1f} s" in summary
    _check_bars(page, job, shot)
    if os.environ.get("EMOTIONQ_DOCS_SCREENSHOT") == "1":
        _save_docs_screenshot(page)


def test_speakers_in_one_channel_show_a_lane_each_and_the_conversation(service, page, tmp_path):
    """The end-to-end job with speakers: two voices in one channel, found by the worker's speaker encoder;
    one lane per speaker with that speaker's segments in their labels' colours, the metrics under the lanes."""
    import conversations as cv

    truth = cv.in_turns(tmp_path / "two.wav", cv.TWO)
    key = service.create_key("web-speakers")
    _open(page, service.url, key)
    page.get_by_label("Speakers").select_option("auto")
    page.get_by_label("Audio file").set_input_files(tmp_path / "two.wav")
    job_id = _finish(page)
    job = httpx.get(f"{service.url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}).json()
    out = job["output"]
    assert job["options"]["speakers"] == "auto" and out["timing"]["diarize_ms"] > 0
    assert [s["name"] for s in out["speakers"]] == ["S1", "S2"]
    assert cv.der(truth, [(s["speaker"], s["start"], s["end"]) for s in out["segments"]]) <= 0.10
    shot = _screenshot(page, tmp_path / "speakers.png")
    lanes = page.locator("#lanes .lane")
    expect(lanes).to_have_count(2)
    for i, speaker in enumerate(out["speakers"]):
        lane = lanes.nth(i)
        assert lane.get_attribute("data-speaker") == speaker["name"] == lane.locator(".name").inner_text()
        mine = [s for s in out["segments"] if s["speaker"] == speaker["name"]]
        boxes = lane.locator(".segment")
        expect(boxes).to_have_count(len(mine))
        for k, s in enumerate(mine):
            at = boxes.nth(k).bounding_box()
            pixel = shot.getpixel((int(at["x"] + at["width"] / 2), int(at["y"] + at["height"] / 2)))
            assert _near(pixel, _rgb(COLOURS[s["label"]])), (s, pixel)
        assert f"speech {speaker['summary']['speech_s']:.1f} s" in lane.locator(".lane-summary").inner_text()
    talk = page.locator("#conversation")
    expect(talk).to_be_visible()
    for party in out["conversation"]["parties"]:
        text = talk.locator(f'dd[data-party="{party["name"]}"]').inner_text()
        assert f"{party['turns']} turns" in text and f"talk {party['talk_s']:.1f} s" in text
    assert "interruptions" in talk.inner_text() and "silences" in talk.inner_text()


def _save_docs_screenshot(page: Page) -> None:
    """The page down to the end of its content, as the docs show it; read back to check it holds the lanes."""
    body = page.locator("body").bounding_box()
    page.screenshot(path=DOCS_SCREENSHOT, clip={"x": 0, "y": 0, "width": VIEWPORT["width"],
                                                "height": min(VIEWPORT["height"], body["y"] + body["height"] + 16)})
    lanes = page.locator("#lanes").bounding_box()
    with Image.open(DOCS_SCREENSHOT) as image:
        assert image.width == VIEWPORT["width"] and image.height >= lanes["y"] + lanes["height"], image.size


def test_refused_upload_shows_the_problem_detail(service, page, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("meeting notes, not a recording\n" * 50)
    with open(notes, "rb") as f:
        problem = service.http.post("/v1/jobs", files={"file": (notes.name, f)})
    assert problem.status_code == 422 and problem.headers["content-type"] == "application/problem+json"
    _open(page, service.url, service.create_key("web-refused"))
    page.get_by_label("Audio file").set_input_files(notes)
    expect(page.locator("#job")).to_have_attribute("data-status", "refused")
    expect(page.get_by_role("alert")).to_contain_text(f"422 {problem.json()['code']}")
    expect(page.get_by_role("alert")).to_contain_text(problem.json()["detail"])
    expect(page.locator(".steps li").first).to_have_text("refused")
    _screenshot(page, tmp_path / "refused.png")


def test_failed_job_shows_its_error_code_and_message(service, page, speech_wav, tmp_path):
    import numpy as np
    import soundfile as sf

    samples, rate = sf.read(speech_wav, dtype="float32")
    samples[1000] = np.nan  # decodes at upload; the worker finds the NaN and fails the job, not retried
    nan_wav = tmp_path / "nan.wav"
    sf.write(nan_wav, np.concatenate([samples, np.random.default_rng().random(8, "float32")]), rate, subtype="FLOAT")
    key = service.create_key("web-failed")
    _open(page, service.url, key)
    page.get_by_label("Audio file").set_input_files(nan_wav)
    expect(page.locator("#job")).to_have_attribute("data-status", "failed", timeout=120_000)
    job_id = page.locator("#facts dt:text-is('job') + dd").inner_text()
    job = httpx.get(f"{service.url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}).json()
    assert job["status"] == "failed" and job["error"]["code"] == "audio_not_finite", job
    expect(page.get_by_role("alert")).to_contain_text(job["error"]["code"])
    expect(page.get_by_role("alert")).to_contain_text(job["error"]["message"])
    expect(page.locator(".steps li").last).to_have_text("failed")
    expect(page.locator("#result")).to_be_hidden()


def test_without_a_key_the_page_asks_for_one(service, page, speech_wav):
    _open(page, service.url)
    page.get_by_label("Audio file").set_input_files(speech_wav)
    expect(page.get_by_role("alert")).to_contain_text("401 unauthorized")
    expect(page.get_by_label("API key")).to_be_focused()


def test_dropped_file_needs_no_key_when_auth_is_disabled(open_api, page, speech_wav, tmp_path):
    [clip] = distinct_clips(speech_wav, tmp_path, 1)
    _open(page, open_api.url)
    data = base64.b64encode(clip.read_bytes()).decode()
    dropped = page.evaluate_handle("""([name, data]) => {
        const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], name, {type: "audio/wav"}));
        return dt;
    }""", [clip.name, data])
    page.dispatch_event("#drop", "drop", {"dataTransfer": dropped})
    job_id = _finish(page)
    job = open_api.job(job_id)
    assert job["input"]["filename"] == clip.name and job["input"]["sha256"]
    _check_bars(page, job, _screenshot(page, tmp_path / "dropped.png"))


def test_the_page_is_outside_auth_and_the_openapi_schema(service):
    r = httpx.get(f"{service.url}/ui/")  # no API key
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert httpx.get(f"{service.url}/ui/app.js").status_code == 200
    assert httpx.get(f"{service.url}/").headers["location"] == "ui/"
    paths = httpx.get(f"{service.url}/openapi.json").json()["paths"]
    assert "/" not in paths and not [p for p in paths if p.startswith("/ui")], sorted(paths)
