"""Classical latent-variable models as Pyro programs: Gaussian mixtures, factor analysis, PPCA; exact and variational EM; full Bayes by NUTS and by SVI with autoguides."""
from ppl_dgm.lvm.bayesian import AUTOGUIDES, BayesianFactorAnalysis, BayesianPPCA, fit_autoguide, run_nuts
from ppl_dgm.lvm.bayesian_mixture import BayesianGaussianMixture
from ppl_dgm.lvm.em import AlternatingOptimizer, run_em, split_parameters, variational_em
from ppl_dgm.lvm.factor_analysis import PPCA, FactorAnalysis, LinearGaussianGuide
from ppl_dgm.lvm.gmm import GaussianMixture

__all__ = [
    "GaussianMixture",
    "FactorAnalysis",
    "PPCA",
    "LinearGaussianGuide",
    "BayesianFactorAnalysis",
    "BayesianPPCA",
    "BayesianGaussianMixture",
    "run_nuts",
    "fit_autoguide",
    "AUTOGUIDES",
    "run_em",
    "variational_em",
    "split_parameters",
    "AlternatingOptimizer",
]
