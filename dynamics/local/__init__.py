"""``dynamics-submit --local``: the rendered stages run as local processes, with progress and a report."""
