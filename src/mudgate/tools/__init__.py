"""What the ``mudgate`` command runs besides the gateway (``mudgate soak``), imported only when
that command runs: nothing here is on the import path of ``mudgate serve``."""
