"""Model backends behind one contract (:mod:`.contract`), chosen by name (:mod:`.registry`)."""
