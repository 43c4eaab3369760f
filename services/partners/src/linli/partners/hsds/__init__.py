"""The partner directory as Open Referral HSDS 3.1 (ADR 0051): the mapping, the read-only
API shaped like HSDS's own, the downloadable package and the residents' public guide."""
