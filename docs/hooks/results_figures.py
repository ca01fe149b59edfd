"""MkDocs hook: committed figures from ``results/`` published with the site, without copies under ``docs/``.

Each figure listed in ``FIGURES`` is added to the build as a virtual file ``assets/results/<name>`` backed by
the repository's own ``results/<name>``, so a page shows it with ``![...](assets/results/<name>)`` and the
strict build checks the link like any other.
"""

from __future__ import annotations

import os

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

#: Figures under results/ that the pages show.
FIGURES = ("sweep_tanh_d1_f_error_vs_width.png",)


def on_files(files, config):
    root = os.path.dirname(os.path.abspath(config.config_file_path))
    for name in FIGURES:
        path = os.path.join(root, "results", name)
        if not os.path.isfile(path):
            raise PluginError(f"the docs show {path}, which does not exist")
        files.append(File.generated(config, f"assets/results/{name}", abs_src_path=path))
    return files
