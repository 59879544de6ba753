"""``steerflow serve``: a steering playground in the browser.

* :mod:`~steerflow.serve.session` — the checked inputs and the model calls behind the page
  (streamed generation, the side-by-side view), no web framework;
* :mod:`~steerflow.serve.dynamics` — the dynamics data: the next-token distribution against u
  (paper 1, Fig. 2) and ‖H(τ) − H(0)‖ along τ;
* :mod:`~steerflow.serve.figures` — their matplotlib figures;
* :mod:`~steerflow.serve.views` — what each widget shows, errors turned into a message;
* :mod:`~steerflow.serve.app` — the Gradio layout and launch (the ``app`` extra).
"""
