"""The engine: stacked client population, local training strategies, round loop, run dirs."""
