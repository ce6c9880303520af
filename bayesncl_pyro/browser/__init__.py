"""The feature browser (``bayesncl-browse``): a static, offline website with a page for every gated
output dimension and every test image of one run, or of two runs side by side.

Python modules gather a run's per-image test features and its gate posterior (``run_features``,
``posterior_source``), reduce them to what the pages show (``dimension_stats``, ``intervals``,
``neighbours``, ``matching``, ``site_data``), pack them into JavaScript data files and thumbnail
sprite sheets (``packing``, ``sprites``) and write the site atomically (``site_builder``,
``site_directory``). The pages themselves are plain HTML/CSS/JS beside these modules
(``index.html``, ``app.js``, ``style.css``), shipped as package data.

May import ``config``, ``data``, ``inference``, ``storage`` and ``evaluation``; only ``cli`` imports it.
"""
