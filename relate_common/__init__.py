"""Small utilities shared by every relate-verl package: the ad-record schema and its
validating reader, language detection, and the ad output format the prompts ask for."""
