# U-Boot script (mkimage -T script -d boot.cmd boot.scr). Environment from the Pi's boot
# partition (uboot.env). bootcount/bootlimit/altbootcmd come from CONFIG_BOOTCOUNT_LIMIT.
if test -z "${slot}"; then setenv slot a; saveenv; fi
setenv bootlimit 3
if test "${slot}" = "a"; then setenv rootpart 2; else setenv rootpart 3; fi
setenv altbootcmd 'if test "${slot}" = "a"; then setenv slot b; else setenv slot a; fi; setenv upgrade_available 0; saveenv; run bootcmd'
setenv bootargs "root=/dev/mmcblk0p${rootpart} ro rootfstype=erofs passerelle.slot=${slot} console=ttyS0,115200 quiet"
load mmc 0:1 ${kernel_addr_r} ${slot}/Image
load mmc 0:1 ${fdt_addr_r} ${slot}/bcm2711-rpi-4-b.dtb
booti ${kernel_addr_r} - ${fdt_addr_r}
