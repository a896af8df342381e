"""Helpers shared by test modules; a test module imports these, never another test module
(``tests/test_layers.py`` checks it).

- ``processes``: real ``tickrun run`` and ``tickrun worker`` processes, the jobs.py they load,
  the execution log their handlers write, and the rows they leave.
- ``background``: the processes a test started in the background, killed when it ends by the
  autouse fixtures in ``tests/conftest.py``.
- ``apps``: in-process apps and bounded runs.
- ``seeds``: task, attempt and run rows written directly, for inspection tests.
- ``cli``: tickrun's entry point driven in the test process (CliRunner).
- ``servers``: HTTP servers: a webhook receiver, a real ``tickrun web``.
"""
