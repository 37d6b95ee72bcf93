"""tsn_dali.data: annotations, video index, clip plans, executors and the clip loader.

Importing this package pulls in no model or trainer code.
"""
