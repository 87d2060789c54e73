"""nbval settings for the book (loaded by pytest through ``-p tests.nbval_plugin``).

nbval compares every output of every cell with the stored one. Progress bars and log messages
(data source, model-cache hits and misses) go to stderr and legitimately differ between a run
with an empty cache and one with a warm cache, so stderr is not compared. Everything printed to
stdout, every table and every glued number still is: a changed number fails the test.
"""

from __future__ import annotations


def pytest_configure(config):
    try:
        from nbval import plugin
    except ImportError:  # nbval not installed: nothing to configure
        return
    if getattr(plugin.IPyNbFile, "_robustvae_patched", False):
        return
    original_init = plugin.IPyNbFile.__init__

    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.skip_compare = tuple(self.skip_compare) + ("stderr",)

    plugin.IPyNbFile.__init__ = __init__
    plugin.IPyNbFile._robustvae_patched = True
