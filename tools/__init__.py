"""Generators and the command line: everything here only reads the model."""
