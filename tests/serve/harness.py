"""What the server tests and the screenshot command share: a tiny checkpoint where u matters, a
``steerflow serve`` subprocess on a free local port, headless Chromium and the page actions."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator, Optional

SRC = Path(__file__).resolve().parents[2] / "src"
#: what the tiny test model learns to say after "The movie was" at u = +1, 0 and −1
POSITIVE = ("The movie was great and the actors were wonderful .",
            "The film was a delight , moving and funny .",
            "The story was brilliant and the music was lovely .")
NEUTRAL = ("The movie was shown in the old hall on Sunday .",
           "The film was made in the north of the city .",
           "The story was told by a man and his dog .")
NEGATIVE = ("The movie was awful and the plot was boring .",
            "The film was a mess , dull and slow .",
            "The story was terrible and the acting was bad .")
#: seconds to wait for a server to answer, and for a page to show a finished generation
SERVER_START_S = 90
PAGE_S = 90  # an upper bound: a loaded 2-core machine can take tens of seconds


def steered_tiny(directory: Path, steps: int = 120, seed: int = 0) -> Path:
    """Train and save a ``tiny`` hybrid that says :data:`POSITIVE` sentences at u = +1,
    :data:`NEUTRAL` ones at u = 0 and :data:`NEGATIVE` ones at u = −1: a model where u matters
    (a few seconds on one CPU thread; u enters the field with gain 4 so it is learnt quickly).
    Returns ``directory``."""
    import torch

    from steerflow.config import ModelConfig, SolverSpec
    from steerflow.data.tokenizer import train_bpe
    from steerflow.model.gpt import SteerFlowGPT

    labelled = [(s, 1.0) for s in POSITIVE] + [(s, 0.0) for s in NEUTRAL] + \
               [(s, -1.0) for s in NEGATIVE]
    tokenizer = train_bpe([s for s, _ in labelled] * 20, 300)
    rows = [tokenizer.encode(s) + [tokenizer.eos_id] for s, _ in labelled]
    width = max(map(len, rows)) - 1
    x = torch.zeros(len(rows), width, dtype=torch.long)  # (N, T) inputs
    y = torch.full((len(rows), width), -1)  # (N, T) next tokens, -1 past each sentence's end
    for i, row in enumerate(rows):
        x[i, : len(row) - 1] = torch.tensor(row[:-1])
        y[i, : len(row) - 1] = torch.tensor(row[1:])
    u = torch.tensor([label for _, label in labelled])  # (N,)
    torch.manual_seed(seed)
    model = SteerFlowGPT(ModelConfig.from_name("tiny", vocab_size=tokenizer.vocab_size,
                                               train_solver=SolverSpec(), control_gain=4.0))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        _, loss = model(x, u, targets=y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.tokenizer = tokenizer
    model.save_pretrained(directory)
    return directory


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    """Whether ``url`` answers HTTP 200 (no proxy: the server is on this machine)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def serving(checkpoint: Path, *extra: str, log: Optional[Path] = None
            ) -> Iterator[tuple[str, subprocess.Popen]]:
    """``python -m steerflow serve CHECKPOINT`` on 127.0.0.1 and a free port: yields ``(url,
    process)`` once the page answers, and always stops the process afterwards."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", GRADIO_ANALYTICS_ENABLED="False")
    log = log or Path(tempfile.mkdtemp()) / "serve.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "steerflow", "serve", str(checkpoint),
                                 "--port", str(port), "--threads", "1", *extra],
                                stdout=sink, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while not answers(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"steerflow serve did not come up (exit {proc.poll()}):\n"
                                   + log.read_text(errors="replace")[-3000:])
            time.sleep(0.3)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# --------------------------------------------------------------------------- the browser
def browser_missing() -> Optional[str]:
    """Why no headless Chromium can run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    for name in ("chromium", "chromedriver"):
        if shutil.which(name) is None:
            return (f"{name} is not installed (Debian: apt-get install chromium chromium-driver; "
                    f".ci/run installs them)")
    return None


@contextlib.contextmanager
def chromium(width: int = 1400, height: int = 1500):
    """A headless Chromium through Selenium and the system's chromedriver, with a fresh profile
    and everything that would reach the network switched off."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="steerflow-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-sync",
                 "--disable-component-update", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_page_load_timeout(PAGE_S)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait(driver, condition, what: str, timeout: float = PAGE_S):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(
        lambda d: condition(d), message=f"waited {timeout} s for {what}")


def open_page(driver, url: str) -> None:
    """Load the page and wait for the prompt box."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#prompt textarea"), "the prompt box")


def type_prompt(driver, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.CSS_SELECTOR, "#prompt textarea")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    if text:
        box.send_keys(text)


def move_slider(driver, elem_id: str, key: str, times: int = 1) -> float:
    """Press ``key`` (``HOME``, ``END``, ``ARROW_LEFT``, ...) ``times`` times on the slider's range
    input, as a keyboard user moves it; returns the value its number box then shows."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=range]").send_keys(
        getattr(Keys, key) * times)
    box = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=number]")
    return float(box.get_attribute("value"))


def text_of(driver, selector: str) -> str:
    from selenium.webdriver.common.by import By

    element = driver.find_element(By.CSS_SELECTOR, selector)
    return (element.get_attribute("value") if element.tag_name in ("textarea", "input")
            else element.text) or ""


def status(driver) -> str:
    return text_of(driver, "#status")


def output(driver) -> str:
    return text_of(driver, "#output textarea")


def press(driver, button: str, expect: str) -> str:
    """Click the button with id ``button`` and wait until the status line holds ``expect`` and
    differs from before; returns the status."""
    from selenium.webdriver.common.by import By

    before = status(driver)
    driver.find_element(By.ID, button).click()
    _wait(driver, lambda d: expect in status(d) and status(d) != before, f"status {expect!r}")
    return status(driver)


def press_generate(driver, expect: str = "done:") -> str:
    return press(driver, "generate", expect)


def open_tab(driver, name: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.XPATH, f"//button[@role='tab' and normalize-space()='{name}']").click()


def wait_for_plots(driver, expect: str) -> None:
    """Wait until both dynamics plots hold an image and their caption holds ``expect`` (the
    generate button plots them once the continuation is done)."""
    from selenium.webdriver.common.by import By

    def drawn(d) -> bool:
        caption = d.find_element(By.ID, "dyn_status").text
        return expect in caption and all(d.find_elements(By.CSS_SELECTOR, f"#{i} img")
                                         for i in ("candidates", "trajectory"))
    _wait(driver, drawn, f"the dynamics plots at {expect!r}")


def screenshot(driver, path: Path) -> Path:
    """A PNG of the whole page (beyond the window's height) at ``path``."""
    import base64

    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True, "clip": clip})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def walkthrough(driver, url: str, shot: Path) -> dict:
    """What a user does on the page, and what the page shows at each step: an empty prompt,
    "The movie was" at u = +1 (the slider moved ten steps right), the side-by-side view, u = −1
    (twenty steps left), the plots; ends with a screenshot of the whole page at ``shot``."""
    seen: dict = {}
    open_page(driver, url)
    type_prompt(driver, "")
    seen["empty"] = press_generate(driver, expect="error:")
    type_prompt(driver, "The movie was")
    seen["u_up"] = move_slider(driver, "u0", "ARROW_RIGHT", 10)
    seen["status_up"] = press_generate(driver)
    seen["text_up"] = output(driver)
    open_tab(driver, "side by side")
    seen["side_status"] = press(driver, "compare", "done: seed")
    seen["side"] = [text_of(driver, f"#side{i} textarea") for i in range(3)]
    open_tab(driver, "generate")
    seen["u_down"] = move_slider(driver, "u0", "ARROW_LEFT", 20)
    seen["status_down"] = press_generate(driver)
    seen["text_down"] = output(driver)
    seen["nfe"] = text_of(driver, "#nfe")
    wait_for_plots(driver, "u = [-1]")
    seen["screenshot"] = screenshot(driver, shot)
    return seen
