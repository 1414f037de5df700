//! edgellm-text
