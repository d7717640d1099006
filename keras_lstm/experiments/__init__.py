"""The train.py experiment app: configuration, tasks, run folders, reporting.

Built on keras_lstm's public API only; the library never imports it.
"""
