"""Training: the one module that trains any objective, its callbacks, optimizer, master weights, checks of its
settings, memory estimate and the export of the model it trains."""
