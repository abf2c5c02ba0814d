"""The page that ``dvc plots show`` and ``dvc plots diff`` write, made to work offline.

Why this exists: DVC's page loads Vega, Vega-Lite and Vega-Embed from a CDN
(``dvc_render.vega.VegaRenderer.SCRIPTS``), so without the internet it opens blank. DVC lets a
repository give its own page (the ``plots.html_template`` setting): this writes one that holds
the three libraries inline, taken from vl-convert-python, a pinned requirement, and points this
clone's ``.dvc/config.local`` at it. ``make setup`` runs it.

    python -m tools.plots_page --out .venv/share/dvc-plots.html

The page is DVC's own (``dvc_render.html.PAGE_HTML``) with the libraries in place of its
``{scripts}`` placeholder, which is where DVC would put the CDN tags.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import vl_convert
from dvc_render.html import PAGE_HTML

from fmnist.cli import run_stage
from fmnist.files import write_text
from tools.dvc_cli import run_dvc

log = logging.getLogger("plots_page")

# DVC's templates are written for Vega-Lite 5 (their $schema); the newest 5.x vl-convert holds.
VEGA_LITE_VERSION = "5.21"


def render_page() -> str:
    """DVC's page template (``{plot_divs}`` and ``{refresh_tag}`` left for DVC to fill) with
    Vega, Vega-Lite and Vega-Embed inline, defining ``vegaEmbed`` as DVC's plots call it.
    """
    bundle = vl_convert.javascript_bundle(vl_version=VEGA_LITE_VERSION)
    # Inline, "</script" would end the script element early; the bundle's strings never need it.
    bundle = bundle.replace("</script", "<\\/script")
    libraries = (
        f"<!-- Vega {vl_convert.get_vega_version()}, Vega-Lite {VEGA_LITE_VERSION}, "
        f"Vega-Embed {vl_convert.get_vega_embed_version()}, from vl-convert-python -->\n"
        f'    <script type="text/javascript">\n{bundle}\n    </script>'
    )
    page = PAGE_HTML.replace("<title>", '<meta charset="utf-8">\n    <title>', 1)
    return page.replace("{scripts}", libraries) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the page")
    args = parser.parse_args()
    write_text(args.out, render_page())
    log.info("wrote %s (%s bytes)", args.out, f"{args.out.stat().st_size:,}")
    # DVC reads a relative plots.html_template from the repository's .dvc directory.
    dvc_directory = Path(run_dvc("root").strip()) / ".dvc"
    setting = os.path.relpath(args.out.resolve(), dvc_directory.resolve())
    run_dvc("config", "--local", "plots.html_template", setting)
    log.info("dvc plots show and dvc plots diff now use it (.dvc/config.local)")


if __name__ == "__main__":
    run_stage("plots_page", main)
