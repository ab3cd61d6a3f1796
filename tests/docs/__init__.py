"""Tests of the documentation: its examples run, and the site builds."""
