"""The simulation engine: state, one-step dynamics, feedback rules, noise, task drivers and the compiled kernel."""
