"""Analysis parts: counting (parameters, mult-adds by layer type), timing on this machine, the
table of runs, Pareto-optimal runs, the report's Markdown and its trade-off plot.
``mobilenet_lab.profile`` and ``mobilenet_lab.report`` use them."""
