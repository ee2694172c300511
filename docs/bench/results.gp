set terminal pngcairo noenhanced size 1500,1200 font 'sans,10'
set output 'docs/bench/results.png'
set datafile missing '?'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.9 border -1
set boxwidth 0.9
set logscale y
set grid ytics
set rmargin at screen 0.84
set key at screen 0.995, screen 0.95 right top vertical
set format y '%g'
set multiplot layout 3,1 title 'efscache benchmark'
set title 'throughput, MiB/s (higher is better)'
set yrange [*:*]
set xrange [-0.6:2.6]
plot 'docs/bench/results.dat' index 0 using 2:xtic(1) title 'limit cold-disk' lc rgb '#4d4d4d', \
     '' index 0 using 3 title 'limit warm-page' lc rgb '#9e9e9e', \
     '' index 0 using 4 title 'efs (emu)' lc rgb '#d62728', \
     '' index 0 using 5 title 'copy (cp + local)' lc rgb '#ff7f0e', \
     '' index 0 using 6 title 'rclone cold' lc rgb '#c5b0d5', \
     '' index 0 using 7 title 'rclone warm-disk' lc rgb '#9467bd', \
     '' index 0 using 8 title 'rclone warm-page' lc rgb '#5e3c99', \
     '' index 0 using 9 title 'efscache cold' lc rgb '#a1d99b', \
     '' index 0 using 10 title 'efscache warm-disk' lc rgb '#31a354', \
     '' index 0 using 11 title 'efscache warm-page' lc rgb '#006d2c'
set title '4 KiB random reads, IOPS (higher is better)'
set yrange [*:*]
set xrange [-0.6:1.6]
unset key
plot 'docs/bench/results.dat' index 1 using 2:xtic(1) title 'limit cold-disk' lc rgb '#4d4d4d', \
     '' index 1 using 3 title 'limit warm-page' lc rgb '#9e9e9e', \
     '' index 1 using 4 title 'efs (emu)' lc rgb '#d62728', \
     '' index 1 using 5 title 'copy (cp + local)' lc rgb '#ff7f0e', \
     '' index 1 using 6 title 'rclone cold' lc rgb '#c5b0d5', \
     '' index 1 using 7 title 'rclone warm-disk' lc rgb '#9467bd', \
     '' index 1 using 8 title 'rclone warm-page' lc rgb '#5e3c99', \
     '' index 1 using 9 title 'efscache cold' lc rgb '#a1d99b', \
     '' index 1 using 10 title 'efscache warm-disk' lc rgb '#31a354', \
     '' index 1 using 11 title 'efscache warm-page' lc rgb '#006d2c'
set title 'seconds (lower is better)'
set yrange [*:*]
set xrange [-0.6:2.6]
plot 'docs/bench/results.dat' index 2 using 2:xtic(1) title 'limit cold-disk' lc rgb '#4d4d4d', \
     '' index 2 using 3 title 'limit warm-page' lc rgb '#9e9e9e', \
     '' index 2 using 4 title 'efs (emu)' lc rgb '#d62728', \
     '' index 2 using 5 title 'copy (cp + local)' lc rgb '#ff7f0e', \
     '' index 2 using 6 title 'rclone cold' lc rgb '#c5b0d5', \
     '' index 2 using 7 title 'rclone warm-disk' lc rgb '#9467bd', \
     '' index 2 using 8 title 'rclone warm-page' lc rgb '#5e3c99', \
     '' index 2 using 9 title 'efscache cold' lc rgb '#a1d99b', \
     '' index 2 using 10 title 'efscache warm-disk' lc rgb '#31a354', \
     '' index 2 using 11 title 'efscache warm-page' lc rgb '#006d2c'
unset multiplot
