"""Tools that check the params without running the pipeline: ``hjepa params`` and
``hjepa audit`` (every parameter changes something measurable). They know nothing of DVC.
"""
