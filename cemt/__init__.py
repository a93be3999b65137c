"""Chemical Environment Modeling Theory: models that predict local quantities at reference points
anywhere (atoms, bonds, mesh nodes), built on Gaussian multipole (GMP) features."""
