# placeholder, replaced by the kernel
