"""The in-cluster side of dynamics: submit, the run controller, and the commands that inspect runs.

``decide`` and ``state`` are pure (the stage state machine); ``kube`` is the only module that talks
to the Kubernetes API; ``run`` is the controller loop; ``submit``, ``status``, ``logs`` and
``doctor`` back the CLI commands wired in :mod:`dynamics.cli.runs`.
"""
