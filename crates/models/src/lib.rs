//! edgellm-models
