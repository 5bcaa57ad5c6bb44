"""The shared core every stage imports: the params schema (``config``), user-facing errors
(``errors``), atomic writes (``io``), the on-disk format of the prepared data set
(``prepared``) and the one pixel scaling for model input (``transforms``).

Every stage in ``dvc.yaml`` depends on this whole folder, so an edit here reruns them all.
"""
