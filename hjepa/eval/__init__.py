"""The ``probe`` stage: features of a frozen encoder (``features``), the torch logistic
regression solver (``linear``), model selection and weighted k-NN (``probes``), and the stage's
work over the three feature sets (``stage``).
"""
