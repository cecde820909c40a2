"""Testing support: the conformance suite every transport and facade passes."""
