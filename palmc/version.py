"""palmc's version, in a module of its own: the store records it, and importing the package for it would
import the API above the store."""

__version__ = "0.1.0"
