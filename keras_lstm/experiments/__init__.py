"""The train.py experiment app, one module per job.

    config       the settings: one dataclass, its command line, its checks
    tasks        the data: generated, or read from a local file
    distribute   where a run trains: one device, several, several machines
    rundir       which folder each run writes; creating and locking it
    model        the model a run trains, built from its settings
    run          one run, from its folder to its metrics
    checkpoint   every finished epoch committed, so any kill resumes
    atomic       files written whole or not at all
    faults       the moments at which a test may kill a run
    samples      text sampled from a character model, for TensorBoard
    reporting    HParams, final metrics, what train.py prints, summary.csv

Built on keras_lstm's public API only; the library never imports it.
"""
