"""The interactive path in a real browser: JupyterLab on localhost, notebooks 00 and 01 run in headless Chromium.

What a reader sees after "Run All": every figure cell shows an ``<img>``, the video is a ``<video>``, the
explorer's sliders exist and moving its layer slider redraws the entropy heatmap, and no cell shows an error.

Needs Debian's ``chromium`` (``/usr/bin/chromium``; ``.ci/run`` installs it) and Playwright from the lock.
Without the browser the test fails; it skips only when ``IEADAPT_ALLOW_NO_BROWSER=1`` is set as well.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from notebook_checks import NOTEBOOK_DIR, is_figure_cell

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LAST_SPATIAL = "up_blocks.3.attentions.2.transformer_blocks.0.attn1"  # of tiny:animatediff (SD 1.5 layout)
#: Small parameters (injected the papermill way, as a cell after the parameters cell).
PARAMETERS = {
    "00_quickstart": {"model": "tiny:animatediff", "num_frames": 4, "num_inference_steps": 2, "perturb_index": 16},
    "01_perturbation_analysis": {
        "model": "tiny:animatediff", "prompts": ["a red circle"], "seeds": [0], "kinds": ["spatial"],
        "layers": [LAST_SPATIAL], "group_kinds": [], "lams": [0.0, 1.0],
        "metrics": ["ssim", "temporal_ssim", "flow_magnitude"], "num_frames": 4, "num_inference_steps": 2,
        "height": 16, "width": 16, "interactive": True},
}
RUN_TIMEOUT_S = 420

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on 127.0.0.1 (no token) serving a temp folder with the two parameterised notebooks."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    root = tmp_path_factory.mktemp("lab")
    for stem, parameters in PARAMETERS.items():
        nb = load_notebook_node(str(NOTEBOOK_DIR / f"{stem}.ipynb"))
        nb = parameterize_notebook(nb, {**parameters, "out_dir": str(root / stem)})
        nbformat.write(nb, root / f"{stem}.ipynb")
    settings = root / ".settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)  # render every cell (no windowing), so offscreen outputs are in the DOM
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "JUPYTER_RUNTIME_DIR": str(root / ".runtime")}
    with open(root / ".lab.log", "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
             "--IdentityProvider.token=", "--ServerApp.password=", "--LabApp.expose_app_in_browser=True",
             f"--ServerApp.root_dir={root}", f"--LabApp.user_settings_dir={root / '.settings'}",
             f"--LabApp.workspaces_dir={root / '.workspaces'}", "--ServerApp.open_browser=False", "--allow-root"],
            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(240):
                try:
                    urllib.request.urlopen(f"{url}/api/status", timeout=2)
                    break
                except OSError:
                    assert server.poll() is None, (root / ".lab.log").read_text()
                    time.sleep(0.5)
            else:
                raise TimeoutError((root / ".lab.log").read_text())
            yield url, root
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        if os.environ.get("IEADAPT_ALLOW_NO_BROWSER") == "1":
            pytest.skip("no /usr/bin/chromium and IEADAPT_ALLOW_NO_BROWSER=1")
        pytest.fail("The browser test needs Debian's chromium: apt-get install -y chromium "
                    "(or set IEADAPT_ALLOW_NO_BROWSER=1 to skip it outside CI).")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


#: The open notebook's code cells as the page shows them: source, execution count, output types, images,
#: videos, rendered error outputs and widget errors.
CELLS_JS = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  if (!panel || !panel.content || !panel.sessionContext) return null;
  return {
    kernel: panel.sessionContext.session && panel.sessionContext.session.kernel
            ? panel.sessionContext.session.kernel.status : null,
    cells: panel.content.widgets.filter(c => c.model.type === 'code').map(c => ({
      source: c.model.sharedModel.getSource(),
      count: c.model.executionCount,
      outputs: c.model.outputs.toJSON().map(o => o.output_type),
      enames: c.model.outputs.toJSON().filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue),
      imgs: Array.from(c.node.querySelectorAll('.jp-OutputArea-output img'))
              .filter(i => i.complete && i.naturalWidth > 0).length,
      videos: c.node.querySelectorAll('.jp-OutputArea-output video').length,
      rendered_errors: c.node.querySelectorAll('[data-mime-type="application/vnd.jupyter.error"]').length,
      widget_errors: (c.node.innerText.match(/Error displaying widget|Error rendering|model not found/g) || []).length,
      sliders: Array.from(c.node.querySelectorAll('.widget-slider .widget-label, .widget-hslider .widget-label'))
                 .map(l => l.innerText.trim()),
    })),
  };
}"""


def _run_all(page, url: str, stem: str) -> list[dict]:
    """Open ``stem`` alone (``?reset``: no restored tabs), wait for its kernel, Run All, wait for the end."""
    page.goto(f"{url}/lab/tree/{stem}.ipynb?reset")
    page.wait_for_function(
        "path => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
        " return w && w.context && w.context.path === path && w.sessionContext.session"
        " && w.sessionContext.session.kernel && w.sessionContext.session.kernel.status === 'idle'; }",
        arg=f"{stem}.ipynb", timeout=120_000)
    page.evaluate("""async path => {
      const app = window.jupyterapp;
      const panel = app.shell.currentWidget;
      app.shell.activateById(panel.id);  // the notebook commands act on the active notebook
      if (panel.context.path !== path) throw new Error('wrong notebook active: ' + panel.context.path);
      await app.commands.execute('notebook:run-all-cells');
    }""", f"{stem}.ipynb")
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        state = page.evaluate(CELLS_JS)
        cells = state["cells"]
        failed = [e for c in cells for e in c["enames"]]
        done = all(c["count"] is not None for c in cells) and state["kernel"] == "idle"
        if failed or done:
            break
        assert time.monotonic() < deadline, f"{stem}: not finished after {RUN_TIMEOUT_S} s: {cells}"
        time.sleep(1.0)
    page.wait_for_timeout(1500)  # let the last outputs (images, widget views) render
    cells = page.evaluate(CELLS_JS)["cells"]
    assert not failed, f"{stem}: error outputs {failed}"
    assert all(c["rendered_errors"] == 0 and c["widget_errors"] == 0 for c in cells), [
        (c["source"][:60], c["rendered_errors"], c["widget_errors"]) for c in cells]
    figure_cells = [c for c in cells if is_figure_cell(c["source"])]
    assert figure_cells, stem
    assert all(c["imgs"] >= 1 for c in figure_cells), [(c["source"][:80], c["imgs"]) for c in figure_cells]
    return cells


def _heatmap_src(page) -> str:
    """The ``src`` of the explorer's entropy heatmap (first image of its first Output widget)."""
    return page.evaluate("""() => {
      const root = window.jupyterapp.shell.currentWidget.node;
      const img = root.querySelector('.widget-output img, .jupyter-widgets-output-area img');
      return img ? img.getAttribute('src') : null;
    }""")


def test_notebooks_render_in_jupyterlab(browser, lab):
    url, root = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    messages = []
    page.on("pageerror", lambda error: messages.append(str(error)))
    try:
        cells = _run_all(page, url, "00_quickstart")
        video_cells = [c for c in cells if "show_video(" in c["source"]]
        assert video_cells and all(c["videos"] >= 1 for c in video_cells), video_cells
        # the <video> plays what the notebook made: the browser decoded its frames
        assert page.evaluate("() => Array.from(window.jupyterapp.shell.currentWidget.node.querySelectorAll('video')).every(v => v.readyState >= 1"
                             " && v.videoWidth > 0)"), "a <video> did not load"

        page.evaluate("() => window.jupyterapp.serviceManager.sessions.shutdownAll()")  # 00's kernel
        cells = _run_all(page, url, "01_perturbation_analysis")
        explorer = next(c for c in cells if "explore(" in c["source"])
        assert {"step", "layer", "head (-1 mean)", "frame (-1 mean)", "video frame"} <= set(explorer["sliders"])
        assert explorer["imgs"] >= 3  # heatmap, attention map, video frame
        before = _heatmap_src(page)
        assert before and before.startswith("data:image/png"), before
        slider = page.locator(".jp-NotebookPanel:visible .widget-hslider",
                              has=page.locator(".widget-label", has_text="layer"))
        handle = slider.locator(".noUi-handle").first
        layer_before = handle.get_attribute("aria-valuenow")
        handle.focus()
        page.keyboard.press("ArrowRight")  # the default layer is the first one with a pooled map
        page.wait_for_function("before => window.jupyterapp.shell.currentWidget.node.querySelector("
                               "'.widget-output img, .jupyter-widgets-output-area img').getAttribute('src') !== before",
                               arg=before, timeout=60_000)
        assert handle.get_attribute("aria-valuenow") != layer_before
        assert _heatmap_src(page) != before
        assert not messages, messages
    finally:
        page.screenshot(path=str(root / "last.png"), full_page=False)
        page.close()
