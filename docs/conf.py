# Sphinx configuration for radiorecon, on top of sphinx-astropy's defaults.
import datetime
import importlib.metadata

from sphinx_astropy.conf.v2 import *  # noqa: F401,F403

project = "radiorecon"
author = "radiorecon developers"
copyright = f"{datetime.date.today().year}, {author}"
release = importlib.metadata.version("radiorecon")
version = release.split("+")[0]

# Builds run without network access (CI included): no inventories are
# fetched, so cross-references to other projects render as plain text.
intersphinx_mapping = {}

exclude_patterns = list(exclude_patterns) + ["_build"]  # noqa: F405
html_theme_options = {
    "github_url": "https://github.com/radiorecon/radiorecon",
    "use_edit_page_button": False,
}
html_title = f"radiorecon {version}"
automodapi_inheritance_diagram = False
automodsumm_inherited_members = False
numpydoc_show_class_members = False
suppress_warnings = list(globals().get("suppress_warnings", [])) + ["config.cache"]

# Tutorials (sphinx-gallery): the scripts in tutorials/ at the repository root
# run at every build, as CI builds the docs, and their figures and output are
# rendered into docs/tutorials/ (generated, not in git). They simulate their
# data at small sizes, so the whole gallery runs in a few minutes on a CPU.
extensions = list(extensions) + ["sphinx_gallery.gen_gallery"]  # noqa: F405
sphinx_gallery_conf = {
    "examples_dirs": "../tutorials",
    "gallery_dirs": "tutorials",
    "filename_pattern": r".*",  # every tutorial runs: none is shown without its output
    "run_stale_examples": True,  # a tutorial always runs against the code being documented
    "abort_on_example_error": True,  # a tutorial that fails fails the build
    "image_scrapers": ("matplotlib",),
    "min_reported_time": 1,
    "within_subsection_order": "FileNameSortKey",
    "write_computation_times": False,  # no sg_execution_times.rst in the source tree
}
