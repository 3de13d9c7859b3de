"""Stage entry points: the commands the rendered Jobs run (``dynamics stage NAME``)."""
